"""The step ledger: which action each step started, written before the step's message is acknowledged.

Delivery is at least once, so a step may run again after a crash, or twice at the same moment after the
monitor re-dispatched it. The ledger makes that harmless: a step that finds its action recorded re-attaches
to it; a step whose earlier attempt died mid-POST (a ``posting_after`` bound and no action id) looks for
the action it may have started (newer than the bound) before it sends anything; a claim with a TTL keeps
two live deliveries from posting at once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from .redis_scripts import DELETE_IF_OWNER, EXPIRE_IF_OWNER
from .redis_values import text_hash

__all__ = ["Ledger", "StepRecord"]


@dataclass
class StepRecord:
    """What the ledger knows about one step."""

    action_id: int | None = None
    posting_after: int | None = None  # the bound noted before a POST whose outcome is not known yet
    outputs: dict[str, Any] | None = None
    status: str | None = None
    progress: int = 0
    locked_tries: int = 0


class Ledger:
    """Step records in Redis, keyed by the step's Celery task id."""

    def __init__(self, client: redis.Redis, *, prefix: str = "hf", retention: float = 7 * 86400) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention = int(retention)
        self._release = client.register_script(DELETE_IF_OWNER)
        self._renew = client.register_script(EXPIRE_IF_OWNER)

    def _key(self, step_key: str) -> str:
        return f"{self.prefix}:step:{step_key}"

    def get(self, step_key: str) -> StepRecord:
        """Return the step's record (empty when the step never ran)."""
        return self._record(self.redis.hgetall(self._key(step_key)))

    def claim_and_get(
        self, step_key: str, ttl: float, pipe: redis.client.Pipeline | None = None
    ) -> tuple[str | None, StepRecord, list[Any]]:
        """Take the step's claim and read its record in one round trip; return (token or None, record, and
        the answers to whatever the caller staged in ``pipe`` beforehand).

        Redis runs a pipeline's commands in order, so the record is read after the claim was taken: when
        the token is not None, nothing another delivery recorded before it is missed.
        """
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        token = self._stage_claim(pipe, step_key, ttl)
        pipe.hgetall(self._key(step_key))
        *staged, claimed, raw = pipe.execute()
        return (token if claimed else None), self._record(raw), staged

    def get_many(self, step_keys: list[str]) -> list[StepRecord]:
        """Return several steps' records in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for key in step_keys:
            pipe.hgetall(self._key(key))
        return [self._record(raw) for raw in pipe.execute()]

    @staticmethod
    def _record(stored: Any) -> StepRecord:
        raw = text_hash(stored)
        return StepRecord(
            action_id=int(raw["action_id"]) if raw.get("action_id") else None,
            posting_after=int(raw["posting_after"]) if raw.get("posting_after") else None,
            outputs=json.loads(raw["outputs"]) if raw.get("outputs") else None,
            status=raw.get("status"),
            progress=int(raw.get("progress") or 0),
            locked_tries=int(raw.get("locked_tries") or 0),
        )

    def claim(self, step_key: str, ttl: float) -> str | None:
        """Take the right to POST for this step; return the claim token, or None if another holds it."""
        pipe = self.redis.pipeline(transaction=False)
        token = self._stage_claim(pipe, step_key, ttl)
        return token if pipe.execute()[0] else None

    def _stage_claim(self, pipe: redis.client.Pipeline, step_key: str, ttl: float) -> str:
        token = uuid.uuid4().hex
        pipe.set(f"{self._key(step_key)}:claim", token, nx=True, px=int(ttl * 1000))
        return token

    def renew(self, step_key: str, token: str, ttl: float) -> None:
        """Extend our claim before another attempt, so it lapses soon only if we die."""
        self._renew(keys=[f"{self._key(step_key)}:claim"], args=[token, int(ttl * 1000)])

    def release(self, step_key: str, token: str) -> None:
        """Give the claim back, if it is still ours."""
        self._release(keys=[f"{self._key(step_key)}:claim"], args=[token])

    def mark_posting(self, step_key: str, bound: int) -> None:
        """Note, before a POST goes out, the id its action will be newer than (the oldest bound wins)."""
        key = self._key(step_key)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(key, "posting_after", int(bound))
        pipe.expire(key, self.retention)
        pipe.execute()

    def clear_posting(self, step_key: str) -> None:
        """Drop the bound of an attempt that provably started nothing."""
        self.redis.hdel(self._key(step_key), "posting_after")

    def bump(self, step_key: str, counter: str) -> int:
        """Count one more of ``counter`` (e.g. budget waits) for this step; return the count."""
        key = self._key(step_key)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, counter, 1)
        pipe.expire(key, self.retention)
        return int(pipe.execute()[0])

    def since(self, step_key: str, field: str, now: float) -> float:
        """Return the time stamped in ``field``, stamping ``now`` there first if it is empty."""
        key = self._key(step_key)
        self.redis.hsetnx(key, field, repr(now))
        return float(self.redis.hget(key, field) or now)

    def record_action(self, step_key: str, action_id: int, outputs: dict[str, Any], **fields: Any) -> None:
        """Record the started action (and its sealed outputs) before the step is acknowledged."""
        mapping: dict[Any, Any] = {
            "action_id": action_id,
            "outputs": json.dumps(outputs),
            "status": "running",
        }
        mapping.update({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in fields.items()})
        self.update(step_key, **mapping)

    def update(self, step_key: str, **fields: Any) -> None:
        """Set display fields (status, progress) on a step record."""
        pipe = self.redis.pipeline()
        self.stage_update(pipe, step_key, **fields)
        pipe.execute()

    def stage_update(self, pipe: redis.client.Pipeline, step_key: str, **fields: Any) -> None:
        """Add ``update`` to a pipeline the caller executes."""
        key = self._key(step_key)
        pipe.hset(key, mapping={k: v for k, v in fields.items() if v is not None})
        pipe.expire(key, self.retention)

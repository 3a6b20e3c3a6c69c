"""Run records, per-server locks and per-server queues in Redis.

A run record is one hash, ``hf:run:<id>``, written by several processes, each into its own fields, so no
writer overwrites another's: ``meta`` (workflow, server, parameters, steps with their task ids; written
once at submit), ``state``/``started``/``finished``/``error`` (the run's course), and ``s<i>`` per step
(status, action id, outputs, error). Live progress is read from the step ledger at display time. Records
outlive Celery's results: finished runs expire after the retention period.

Parameters never hold secrets; step outputs hold sealed root passwords only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import redis

from .ledger import Ledger
from .redis_scripts import DELETE_IF_OWNER, EXPIRE_IF_OWNER
from .redis_values import text, text_hash, texts

__all__ = ["ACTIVE", "FINAL", "RunState", "RunStore", "chain_holder", "has_ended"]

RunState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
# Final states of runs, and of fleet jobs, which may also end "completed_with_failures" (some servers did
# not succeed while the error threshold held).
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "completed_with_failures"})
ACTIVE: frozenset[str] = frozenset({"queued", "running", "cancelling"})


# Top-level run fields kept as JSON: the error, the power restore after a failure, the state left behind,
# who cancelled it.
_JSON_FIELDS = ("error", "restore", "left", "notified", "cancelled_by")


def has_ended(record: dict[str, Any]) -> bool:
    """Tell whether a run (or job) record is over: a final state, no power restore still under way, and (a
    job) none of its runs still in flight: a cancelled job's runs stop only before their next step."""
    return (
        record["state"] in FINAL
        and (record.get("restore") or {}).get("state") != "powering_on"
        and not (record.get("counts") or {}).get("running")
    )


def chain_holder(root_id: str | None, task_id: str | None) -> str:
    """Return the lock holder name of a chain of action tasks sent outside a run (its root task id)."""
    return f"chain:{root_id or task_id}"


class RunStore:
    """Run records and server locks, keyed under one prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "hf",
        retention: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention = int(retention)
        self.clock = clock
        self.ledger = Ledger(client, prefix=prefix, retention=retention)
        self._release = client.register_script(DELETE_IF_OWNER)
        self._refresh = client.register_script(EXPIRE_IF_OWNER)

    # -- keys ------------------------------------------------------------------------------------------

    def _run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def _lock(self, server_id: int) -> str:
        return f"{self.prefix}:lock:server:{server_id}"

    def _queue(self, server_id: int) -> str:
        return f"{self.prefix}:queue:server:{server_id}"

    def cancel_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:cancel"

    # -- records ---------------------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def create(self, meta: dict[str, Any], state: RunState = "queued") -> None:
        """Write a new run's record and index it. Its ``chain`` (the steps' arguments, kept to be sent or
        sent again until the first step starts) goes in a field of its own, which ``begin_step`` drops."""
        now = self.clock()
        key = self._run(meta["id"])
        meta = dict(meta)
        mapping: dict[Any, Any] = {"state": state, "created": repr(now)}
        chain = meta.pop("chain", None)
        if chain is not None:
            mapping["chain"] = json.dumps(chain)
        mapping["meta"] = json.dumps(meta)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=mapping)
        pipe.zadd(f"{self.prefix}:runs", {meta["id"]: now})
        pipe.zadd(f"{self.prefix}:runs:server:{meta['server_id']}", {meta["id"]: now})
        pipe.sadd(f"{self.prefix}:runs:active", meta["id"])
        pipe.execute()

    def get(self, run_id: str, *, live: bool = True) -> dict[str, Any] | None:
        """Return the run as one dict; None if unknown.

        ``live`` merges each step's ledger (its action id and progress while it runs): what people are
        shown. The engine's own bookkeeping reads the record alone (``live=False``): it runs several times
        per step, and the ledger reads were most of a run's Redis round trips.
        """
        run = self._parse(self.redis.hgetall(self._run(run_id)))
        if run is None or not live:
            return run
        ledger = self.ledger.get_many([step["task_id"] for step in run["steps"]])
        for step, rec in zip(run["steps"], ledger, strict=True):
            if step.get("action_id") is None and rec.action_id is not None:
                step["action_id"] = rec.action_id
            if step["status"] in ("pending", "running") and rec.action_id is not None:
                step["status"] = "running"
                step["progress"] = rec.progress
            elif step["status"] in ("pending", "running") and rec.posting_after is not None:
                # Its POST went out and no answer is recorded: in flight, or answered while the worker or
                # Redis was away (the step comes back with its message and re-attaches to what it started).
                step["status"] = "running"
                step["posted"] = True
            elif step["status"] == "succeeded":
                step["progress"] = 100
        return run

    def get_for_step(self, run_id: str) -> tuple[dict[str, Any] | None, bool]:
        """Return what a starting step reads, in one round trip: the run's record (as ``get(live=False)``)
        and whether a cancel was asked for it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._run(run_id))
        pipe.exists(self.cancel_key(run_id))
        raw, cancel = pipe.execute()
        return self._parse(raw), bool(cancel)

    @staticmethod
    def _parse(stored: Any) -> dict[str, Any] | None:
        raw = text_hash(stored)
        if "meta" not in raw:
            return None
        run: dict[str, Any] = json.loads(raw["meta"])
        if raw.get("chain"):
            run["chain"] = json.loads(raw["chain"])
        run["state"] = raw.get("state", "queued")
        for field in ("created", "started", "finished"):
            run[field] = float(raw[field]) if raw.get(field) else None
        for field in _JSON_FIELDS:
            run[field] = json.loads(raw[field]) if raw.get(field) else None
        for i, step in enumerate(run["steps"]):
            step.update(json.loads(raw.get(f"s{i}", "{}")))
            step.setdefault("status", "pending")
        return run

    def set_state(self, run_id: str, state: RunState, **fields: Any) -> None:
        """Move a run to ``state`` and set the given top-level fields; final states start the expiry."""
        mapping: dict[Any, Any] = {"state": state}  # redis-py wants its own key type; ours are str
        for name, value in fields.items():
            mapping[name] = json.dumps(value) if name in _JSON_FIELDS else repr(value)
        key = self._run(run_id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=mapping)
        if state in FINAL:
            pipe.expire(key, self.retention)
            # A run whose restore is still powering its server on has not ended (has_ended): it stays active.
            if (fields.get("restore") or {}).get("state") != "powering_on":
                pipe.srem(f"{self.prefix}:runs:active", run_id)
        pipe.execute()

    def note_found(self, run_id: str, status: str) -> None:
        """Record the server status a queued run found as it started, where it was planned for another.
        The plan (``meta``) is written at create and here only, before the run's first step: no race."""
        raw = self.redis.hget(self._run(run_id), "meta")
        if raw is not None:
            meta = json.loads(raw)
            self.redis.hset(self._run(run_id), "meta", json.dumps({**meta, "server_status_before": status}))

    def state(self, run_id: str) -> str | None:
        raw = self.redis.hget(self._run(run_id), "state")
        return text(raw) if raw else None

    def update_step(self, run_id: str, index: int, *, pipe: Any = None, **fields: Any) -> None:
        """Merge fields into step ``index`` of the run; with ``pipe``, the write is staged there (the read of
        what the step holds is made now)."""
        key = self._run(run_id)
        raw = self.redis.hget(key, f"s{index}")
        step = json.loads(raw) if raw else {}
        step.update(fields)
        (pipe or self.redis).hset(key, f"s{index}", json.dumps(step))

    def list(
        self, *, active: bool = False, server_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Return runs, newest first: all kept ones, only active ones, or one server's."""
        self.redis.zremrangebyscore(f"{self.prefix}:runs", "-inf", self.clock() - self.retention)
        if server_id is not None:
            ids = texts(self.redis.zrevrange(f"{self.prefix}:runs:server:{server_id}", 0, limit - 1))
        else:
            ids = texts(self.redis.zrevrange(f"{self.prefix}:runs", 0, -1 if active else limit - 1))
        if active:
            members = set(texts(self.redis.smembers(f"{self.prefix}:runs:active")))
            ids = [i for i in ids if i in members]
        runs = [self.get(i) for i in ids[:limit]]
        return [r for r in runs if r is not None]

    # -- the per-server lock and queue ---------------------------------------------------------------

    def acquire(self, server_id: int, run_id: str, ttl: float) -> str | None:
        """Take the server for ``run_id``; return None, or the id of the run that holds it."""
        if self.redis.set(self._lock(server_id), run_id, nx=True, px=int(ttl * 1000)):
            return None
        holder = self.redis.get(self._lock(server_id))
        return text(holder) if holder else self.acquire(server_id, run_id, ttl)

    def holder(self, server_id: int) -> str | None:
        raw = self.redis.get(self._lock(server_id))
        return text(raw) if raw else None

    def holders(self, server_ids: Sequence[int]) -> dict[int, str]:
        """Return the run holding each of these servers, for those held (one round trip)."""
        if not server_ids:
            return {}
        raws = self.redis.mget([self._lock(i) for i in server_ids])
        return {i: text(raw) for i, raw in zip(server_ids, raws, strict=True) if raw}

    def note_image(self, pipe: redis.client.Pipeline, image_id: int, run_id: str) -> None:
        """Stage in ``pipe`` a note of which run made an image (kept as long as run records are)."""
        key = f"{self.prefix}:images"
        pipe.hset(key, str(image_id), run_id)
        pipe.expire(key, self.retention)

    def image_runs(self, image_ids: Sequence[int]) -> dict[int, str]:
        """Return the run that made each of these images, for those one of ours made."""
        if not image_ids:
            return {}
        raws = self.redis.hmget(f"{self.prefix}:images", [str(i) for i in image_ids])
        return {i: text(raw) for i, raw in zip(image_ids, raws, strict=True) if raw}

    def refresh(self, server_id: int, run_id: str, ttl: float) -> None:
        """Renew ``run_id``'s hold on the server, if it still has it."""
        self._refresh(keys=[self._lock(server_id)], args=[run_id, int(ttl * 1000)])

    def drop_chain(self, run_id: str) -> None:
        """Remove the chain (the steps' arguments) from a run's record once it has been sent."""
        if not self.redis.hdel(self._run(run_id), "chain"):
            self._drop_chain_from_meta(run_id)

    def _drop_chain_from_meta(self, run_id: str) -> None:
        # Records written before the chain had a field of its own kept it inside ``meta``.
        raw = self.redis.hget(self._run(run_id), "meta")
        if raw:
            meta = json.loads(raw)
            if meta.pop("chain", None) is not None:
                self.redis.hset(self._run(run_id), "meta", json.dumps(meta))

    def begin_step(self, run: dict[str, Any], index: int | None, now: float, *, first: bool) -> None:
        """Record, in one round trip, what a step's start changes: the run's hold on its server renewed
        (a long run keeps it, a dead one loses it), the step running (unless a faster delivery of it
        stored more: HSETNX), and for the run's first step, the run running without its chain."""
        key = self._run(run["id"])
        pipe = self.redis.pipeline()
        if first:
            pipe.hset(key, mapping={"state": "running", "started": repr(now)})
            pipe.hdel(key, "chain")
        self._refresh(
            keys=[self._lock(run["server_id"])], args=[run["id"], int(run["lock_ttl"] * 1000)], client=pipe
        )
        if index is not None and run["steps"][index].get("status") in (None, "pending"):
            pipe.hsetnx(key, f"s{index}", json.dumps({"status": "running", "started": now}))
        answers = pipe.execute()
        if first and not answers[1]:
            self._drop_chain_from_meta(run["id"])

    def release(self, server_id: int, run_id: str) -> None:
        """Free the server if ``run_id`` holds it."""
        self._release(keys=[self._lock(server_id)], args=[run_id])

    def enqueue(self, server_id: int, run_id: str) -> None:
        """Queue a run behind the server's current one."""
        self.redis.rpush(self._queue(server_id), run_id)

    def queued(self, server_id: int) -> Sequence[str]:
        """The runs queued behind the server's current one, first first."""
        return texts(self.redis.lrange(self._queue(server_id), 0, -1))

    def dequeue(self, server_id: int) -> str | None:
        raw = self.redis.lpop(self._queue(server_id))
        return text(raw) if raw else None

    def unqueue(self, server_id: int, run_id: str) -> bool:
        return bool(self.redis.lrem(self._queue(server_id), 0, run_id))

    # -- cancel ------------------------------------------------------------------------------------------

    def request_cancel(self, run_id: str) -> None:
        self.redis.set(self.cancel_key(run_id), "1", ex=self.retention)

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self.redis.exists(self.cancel_key(run_id)))

"""Parked waits: steps whose action (or target state) the monitor watches on their behalf.

A wait (``workers.wait_state.Wait``) is one JSON record plus its place in a sorted set scored by the time
of its next poll. The record carries everything needed to continue the Celery chain without the task that
parked it: the step's result so far and the request fields (chain, callbacks, errbacks, root and parent ids).
"""

from __future__ import annotations

import json

import redis

from .redis_values import texts
from .wait_state import Phase, Wait

__all__ = ["WaitStore"]


class WaitStore:
    """All parked waits of the cluster, in Redis."""

    def __init__(self, client: redis.Redis, *, prefix: str = "hf") -> None:
        self.redis = client
        self.index = f"{prefix}:waits"
        self.prefix = f"{prefix}:wait:"
        # Waits parked to be sent again later (Phase.LATER), counted so that steps short of budget can
        # spread their returns over the refill instead of all coming back for the same token.
        self.later_index = f"{prefix}:waits:later"

    def park(self, wait: Wait) -> None:
        """Store a wait (new or changed) and schedule its next poll at ``wait.next``."""
        pipe = self.redis.pipeline()
        self.stage_park(pipe, wait)
        pipe.execute()

    save = park

    def stage_park(self, pipe: redis.client.Pipeline, wait: Wait) -> None:
        """Add ``park(wait)`` to a pipeline the caller executes (several parks in one round trip)."""
        pipe.set(self.prefix + wait.id, json.dumps(wait.to_json()))
        pipe.zadd(self.index, {wait.id: float(wait.next)})
        if wait.phase is Phase.LATER:
            pipe.zadd(self.later_index, {wait.id: float(wait.next)})

    def remove(self, wait_id: str) -> None:
        """Forget a wait once its step has been continued or failed."""
        pipe = self.redis.pipeline()
        pipe.zrem(self.index, wait_id)
        pipe.zrem(self.later_index, wait_id)
        pipe.delete(self.prefix + wait_id)
        pipe.execute()

    def due(self, now: float, limit: int = 1000) -> list[str]:
        """Return the ids of waits whose next poll is due, soonest first."""
        return texts(self.redis.zrangebyscore(self.index, "-inf", now, start=0, num=limit))

    def upcoming(self, now: float, limit: int) -> list[str]:
        """Return ids of waits not yet due, soonest first (to fill a batch request at no extra cost)."""
        if limit <= 0:
            return []
        return texts(self.redis.zrangebyscore(self.index, f"({now}", "+inf", start=0, num=limit))

    def next_due(self) -> float | None:
        """Return the time of the soonest poll, or None when nothing waits."""
        first = self.redis.zrange(self.index, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def load(self, ids: list[str]) -> list[Wait]:
        """Return these waits, skipping ones removed meanwhile."""
        if not ids:
            return []
        raws = self.redis.mget([self.prefix + i for i in ids])
        return [Wait.from_json(json.loads(r)) for r in raws if r]

    def get(self, wait_id: str) -> Wait | None:
        """Return one wait."""
        raw = self.redis.get(self.prefix + wait_id)
        return Wait.from_json(json.loads(raw)) if raw else None

    def later_count(self) -> int:
        """Return how many steps are parked to be sent again later."""
        return int(self.redis.zcard(self.later_index))

    def count(self) -> int:
        """Return how many waits are parked."""
        return int(self.redis.zcard(self.index))

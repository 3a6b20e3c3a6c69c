"""Task messages to send later, kept in Redis and sent by whichever worker runs the monitor's next round.

A Celery countdown would sit unacknowledged in one worker's memory until it is due, and come back only
after the visibility timeout if that worker died (DESIGN "Waiting"). Work that must happen later (a fleet
job asking to advance once the rate budget has refilled) is kept here instead, where any worker finds it.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from .redis_values import texts

__all__ = ["Deferred"]


class Deferred:
    """A sorted set of ``{"task", "kwargs"}`` entries scored by when to send them."""

    def __init__(self, client: redis.Redis, *, prefix: str = "hf") -> None:
        self.redis = client
        self.key = f"{prefix}:deferred"

    def later(self, task: str, kwargs: dict[str, Any], at: float) -> None:
        """Send ``task`` with ``kwargs`` at ``at``; the same entry twice is kept once, at the earlier time."""
        member = json.dumps({"task": task, "kwargs": kwargs}, sort_keys=True)
        # LT updates an entry only to an earlier time, and still adds a new one (Redis >= 6.2).
        self.redis.zadd(self.key, {member: at}, lt=True)

    def next_due(self) -> float | None:
        """Return when the soonest entry is due, or None."""
        first = self.redis.zrange(self.key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def due(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Return the due entries (their member, for ``done``, and their content)."""
        members = texts(self.redis.zrangebyscore(self.key, "-inf", now, start=0, num=limit))
        return [(m, json.loads(m)) for m in members]

    def done(self, member: str) -> None:
        """Forget an entry once it was sent."""
        self.redis.zrem(self.key, member)

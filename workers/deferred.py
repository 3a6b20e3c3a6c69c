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

# KEYS[1] the set, ARGV[1] the entry, ARGV[2] when to send it, ARGV[3] now: kept at the earlier time, but an
# entry already due is being sent (or about to be), so a later time replaces it: the send's own work may ask
# for another send later, and ``done`` must not then forget that.
_LATER = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) < tonumber(cur) or tonumber(cur) <= tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 0
"""

# KEYS[1] the set, ARGV[1] the entry, ARGV[2] the time it was sent for: forgotten only if still at that time.
_DONE = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


class Deferred:
    """A sorted set of ``{"task", "kwargs"}`` entries scored by when to send them."""

    def __init__(self, client: redis.Redis, *, prefix: str = "hf") -> None:
        self.redis = client
        self.key = f"{prefix}:deferred"
        self._later = client.register_script(_LATER)
        self._done = client.register_script(_DONE)

    def later(self, task: str, kwargs: dict[str, Any], at: float, now: float) -> None:
        """Send ``task`` with ``kwargs`` at ``at``; the same entry twice is kept once, at the earlier time,
        unless the one kept is already due: a fleet advance sent by a round asked for its next one before
        the round forgot the entry, and that ask was lost with it (a reviewer)."""
        member = json.dumps({"task": task, "kwargs": kwargs}, sort_keys=True)
        self._later(keys=[self.key], args=[member, repr(at), repr(now)])

    def next_due(self) -> float | None:
        """Return when the soonest entry is due, or None."""
        first = self.redis.zrange(self.key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def due(self, now: float, limit: int = 100) -> list[tuple[tuple[str, float], dict[str, Any]]]:
        """Return the due entries (their member and time, for ``done``, and their content)."""
        found: Any = self.redis.zrangebyscore(self.key, "-inf", now, start=0, num=limit, withscores=True)
        members = texts([pair[0] for pair in found])
        return [((m, float(pair[1])), json.loads(m)) for m, pair in zip(members, found, strict=True)]

    def done(self, sent: tuple[str, float]) -> None:
        """Forget an entry once it was sent, unless it was asked for again meanwhile (at another time)."""
        member, at = sent
        self._done(keys=[self.key], args=[member, repr(at)])

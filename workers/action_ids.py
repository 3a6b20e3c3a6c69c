"""The newest action id the project has been seen to have, and when: a lower bound for new actions.

Action ids only grow, so any action started after we saw id N has an id above N. A step about to POST
takes the mark as its bound when it was seen within ``fresh_for`` seconds (by our own clock, never
compared with the API's), and otherwise reads the server's newest action: on a busy fleet the mark is
always fresh, so the extra read is spent only by lone runs. The bound is what lets a step tell its own
action from someone else's after a lost answer (workers/engine.py).
"""

from __future__ import annotations

from typing import Any

import redis

__all__ = ["HighWater"]

# Keep the larger id; stamp the time it was (re)confirmed.
_OBSERVE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'id') or '0')
local new = tonumber(ARGV[1])
if new >= cur then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], 86400)
end
return 1
"""


class HighWater:
    """One project's high-water mark of action ids, in Redis."""

    def __init__(self, client: redis.Redis, key: str, *, fresh_for: float = 5.0) -> None:
        self.redis = client
        self.key = key
        self.fresh_for = fresh_for
        self._observe = client.register_script(_OBSERVE)

    def observe(self, action_id: int, now: float) -> None:
        """Note that an action with this id exists (seen at ``now``)."""
        self._observe(keys=[self.key], args=[int(action_id), repr(now)])

    def stage_read(self, pipe: redis.client.Pipeline) -> None:
        """Add a read of the mark to a pipeline (a step reads it with its claim); pass its answer to
        ``fresh_from``."""
        pipe.hmget(self.key, "id", "at")

    def fresh_from(self, raw: Any, now: float) -> int | None:
        """Return the mark read by ``stage_read`` if it was seen within ``fresh_for`` seconds of ``now``,
        else None."""
        if self.fresh_for <= 0:
            return None
        if raw[0] is None or raw[1] is None:
            return None
        seen_at = float(raw[1])
        if not 0 <= now - seen_at <= self.fresh_for:
            return None
        return int(raw[0])

"""The project's request budget, shared by every worker process through one Redis token bucket.

Hetzner refills a project's budget continuously (3600 or 7200 an hour) and reports it on every answer.
Each process spends from the same bucket before each request; the first answer sets the bucket to what
the API says is left (and learns the project's limit), and every later answer's ``RateLimit-*`` headers
pull the bucket down to what the API says is left, so requests made by other tools on the same project
are accounted for too. Bulk work (fleet jobs) may not spend the last ``bulk_reserve`` of the bucket, so an
interactive run never queues behind a large fleet job.

The bucket key is a hash of the token: the token itself never reaches Redis.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis

from .errors import RateBudgetExhausted

__all__ = ["Priority", "RateBudget", "RateBudgetExhausted", "bucket_key"]

Priority = Literal["interactive", "bulk"]

# Refill, then take one token if the caller's floor allows; answer how long to wait otherwise.
_TAKE = """
local now = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'limit')
local limit = tonumber(b[3]) or tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
if rate <= 0 then rate = limit / 3600.0 end
local tokens = tonumber(b[1]) or limit
local ts = tonumber(b[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - ts) * rate)
local floor = tonumber(ARGV[4]) * limit
local wait = 0
if tokens - floor >= 1 then
  tokens = tokens - 1
  redis.call('HINCRBY', KEYS[1], 'spent', 1)
else
  wait = (floor + 1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'limit', tostring(limit))
redis.call('EXPIRE', KEYS[1], 7200)
return tostring(wait)
"""

# The first answer (or one reporting a new RateLimit-Limit) sets the bucket to what the API says is left:
# our default guess must not hold a project with a larger limit back, nor let one with a smaller limit
# overspend. After that, answers only lower it: they arrive out of order, and a late one is stale.
_OBSERVE = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local remaining = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
if rate <= 0 then rate = limit / 3600.0 end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'seen_limit')
local tokens = tonumber(b[1]) or limit
local ts = tonumber(b[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - ts) * rate)
if tonumber(b[3]) ~= limit or remaining < tokens then tokens = math.min(remaining, limit) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'limit', tostring(limit),
           'seen_limit', tostring(limit))
redis.call('EXPIRE', KEYS[1], 7200)
return tostring(tokens)
"""


def bucket_key(token: str, prefix: str = "hf") -> str:
    """Return the Redis key of a project's bucket: named by a hash, never by the token."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"{prefix}:rate:{digest}"


@dataclass
class RateBudget:
    """Take a token before each request; correct the bucket from each answer's headers."""

    redis: redis.Redis
    key: str
    default_limit: int = 3600
    # Tokens per second; 0 means "limit / 3600", the API's documented refill. A simulator running
    # faster than real time refills faster, and says so through this setting.
    refill_per_second: float = 0.0
    bulk_reserve: float = 0.1
    # Short waits are slept through for smooth pacing; a task facing a longer one goes back to the
    # broker with a countdown instead of holding its worker slot.
    max_wait: float = 5.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._take = self.redis.register_script(_TAKE)
        self._observe = self.redis.register_script(_OBSERVE)

    def try_take(self, priority: Priority = "interactive") -> float:
        """Take one token if there is one; return 0, or the seconds until one is free."""
        floor = self.bulk_reserve if priority == "bulk" else 0.0
        args = [self.clock(), self.default_limit, self.refill_per_second, floor]
        return float(self._take(keys=[self.key], args=args))

    def take(self, priority: Priority = "interactive", max_wait: float | None = None) -> float:
        """Take one token, sleeping for refill while needed; return the seconds waited."""
        limit = self.max_wait if max_wait is None else max_wait
        waited = 0.0
        while True:
            wait = self.try_take(priority)
            if wait <= 0:
                return waited
            if waited + wait > limit:
                raise RateBudgetExhausted(wait, self.rate())
            # Sleep a little past the refill so concurrent takers do not all wake on the same token.
            pause = min(wait + 0.01, limit - waited)
            self.sleep(pause)
            waited += pause

    def rate(self) -> float:
        """Return the tokens a second the bucket refills at (the API's: its limit spread over an hour)."""
        if self.refill_per_second > 0:
            return self.refill_per_second
        limit = self.redis.hget(self.key, "limit")
        return float(limit or self.default_limit) / 3600.0

    def observe(self, headers: dict[str, str] | object) -> None:
        """Lower the bucket to the API's ``RateLimit-Remaining``, and learn its ``RateLimit-Limit``."""
        get = getattr(headers, "get", None)
        if get is None:
            return
        try:
            limit = int(get("RateLimit-Limit"))
            remaining = int(get("RateLimit-Remaining"))
        except (TypeError, ValueError):
            return
        self._observe(keys=[self.key], args=[self.clock(), limit, remaining, self.refill_per_second])

    def snapshot(self) -> dict[str, float]:
        """Return the bucket's stored fields (tokens, limit, spent) for status displays and benches."""
        raw = self.redis.hgetall(self.key)
        return {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}

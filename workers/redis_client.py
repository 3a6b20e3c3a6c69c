"""The one way our processes open a client of our Redis (run records, waits, budget, ledger): with bounded
waits. A module of its own, so that a CLI read needs neither the API client nor the engine."""

from __future__ import annotations

import redis

__all__ = ["REDIS_CONNECT_TIMEOUT", "REDIS_TIMEOUT", "redis_for"]

# Set, not left to redis-py's defaults (none before 8.x): a Redis that accepts connections and never
# answers must end a command with a TimeoutError, which the web service answers 503 and the CLI reports,
# not hang it. No client of ours blocks on a command (kombu's BRPOP uses its own connections).
REDIS_TIMEOUT = 10.0
REDIS_CONNECT_TIMEOUT = 5.0


def redis_for(url: str) -> redis.Redis:
    """Return a client of our Redis with bounded waits."""
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_CONNECT_TIMEOUT
    )

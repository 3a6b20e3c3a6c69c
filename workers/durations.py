"""How long each kind of action has been taking, so the monitor can poll near its expected end.

A moving average per action command, measured from the API's own ``started``/``finished`` stamps and kept
in Redis for every worker. Polling at the expected end spends no more requests than backing off blindly
(polls are batched), and notices the end sooner.
"""

from __future__ import annotations

from datetime import datetime

import redis

__all__ = ["Durations", "parse_time"]

_WEIGHT = 0.3  # of the newest observation


class Durations:
    """Per-command moving averages of action durations, in seconds."""

    def __init__(self, client: redis.Redis, *, prefix: str = "hf") -> None:
        self.redis = client
        self.key = f"{prefix}:durations"

    def expected(self, command: str | None) -> float | None:
        """Return the expected duration of an action of this command, if one has been seen."""
        if not command:
            return None
        raw = self.redis.hget(self.key, command)
        return float(raw) if raw else None

    def observe(self, command: str | None, seconds: float) -> None:
        """Fold one finished action's duration into the command's average."""
        if not command or seconds < 0:
            return
        old = self.expected(command)
        new = seconds if old is None else (1 - _WEIGHT) * old + _WEIGHT * seconds
        self.redis.hset(self.key, command, repr(round(new, 3)))


def parse_time(value: str | None) -> float | None:
    """Return the UNIX time of an RFC 3339 timestamp from the API (compared only with the API's own)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

"""The per-project token bucket behind ``RateLimit-*`` headers and 429 answers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .clock import Clock

__all__ = ["RateDecision", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one request against the bucket, with the three header values."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    full_at: float  # ``reset`` before rounding up, so a fractional clock skew rounds like the rest

    def headers(self, skew: float = 0.0) -> list[tuple[str, str]]:
        """Return the ``RateLimit-*`` headers; ``skew`` shifts ``Reset`` as it shifts ``Date``."""
        return [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(math.ceil(self.full_at + skew))),
        ]


class TokenBucket:
    """Capacity ``limit``, refilled continuously at ``limit / 3600`` tokens a second times the clock's speed.

    With the default 3600/h this is the documented "one request per second"; ``RateLimit-Reset`` is the
    UNIX second at which the bucket is full again (ISSUE-J: remaining 3598 → reset = now + 2).
    Not thread-safe by itself: the backend calls it under its lock.
    """

    def __init__(self, clock: Clock, limit: int = 3600) -> None:
        self.clock = clock
        self.limit = 0
        self.tokens = 0.0
        self.updated = clock.now()
        self.set_limit(limit)

    def set_limit(self, limit: int) -> None:
        """Change the hourly limit and fill the bucket (what a new project quota would look like)."""
        limit = int(limit)
        if limit < 1:
            raise ValueError(f"rate limit must be >= 1 request per hour, got {limit}")
        self.limit = limit
        self.tokens = float(limit)
        self.updated = self.clock.now()

    def _rate(self) -> float:
        return self.limit / 3600.0 * self.clock.speed

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.limit), self.tokens + (now - self.updated) * self._rate())
            self.updated = now

    def settle(self) -> None:
        """Account the refill up to now; call before changing the clock's speed."""
        self._refill(self.clock.now())

    def take(self) -> RateDecision:
        """Spend one token if there is one; always return the headers to send."""
        now = self.clock.now()
        self._refill(now)
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        return self._decision(allowed, now)

    def peek(self) -> RateDecision:
        """Return the current headers without spending a token."""
        now = self.clock.now()
        self._refill(now)
        return self._decision(True, now)

    def _decision(self, allowed: bool, now: float) -> RateDecision:
        missing = self.limit - self.tokens
        full_at = now + missing / self._rate() if missing > 1e-9 else now
        return RateDecision(allowed, self.limit, int(self.tokens + 1e-9), math.ceil(full_at), full_at)

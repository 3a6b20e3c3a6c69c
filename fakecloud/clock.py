"""The one clock that every part of fakecloud reads.

Timestamps are real UNIX seconds, so ``RateLimit-Reset`` and action ``started`` stay meaningful to a client
that compares them with its own clock. ``speed`` is the time factor: the backend divides every action duration
by it and the rate bucket multiplies its refill rate by it. Nothing runs in the background: the backend asks
the clock for ``now()`` at the start of each request and settles whatever became due.

A clock skew (``Backend.skew``, config key ``skew``) is not part of the clock: time inside fakecloud stays
true, and only the timestamps ``/v1`` reports are shifted, so changing the skew never settles or delays an
action, and never refills the rate bucket.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["MAX_SKEW", "Clock", "ManualClock", "RealClock", "check_skew"]

# A year: a larger offset is no longer a skewed clock but a wrong date, and nobody tests for that.
MAX_SKEW = 366 * 86400.0


@runtime_checkable
class Clock(Protocol):
    """What the backend needs from a clock."""

    speed: float

    def now(self) -> float:
        """Return the current time in UNIX seconds."""
        ...


def _check_speed(speed: float) -> float:
    speed = float(speed)
    # A zero or negative factor would make durations infinite or negative; refuse it where it is set.
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")
    return speed


def check_skew(skew: object) -> float:
    """Return ``skew`` as seconds, or raise ValueError saying what a valid skew is."""
    if isinstance(skew, bool) or not isinstance(skew, int | float) or not abs(skew) <= MAX_SKEW:
        raise ValueError(
            f"must be a number of seconds within ±{MAX_SKEW:.0f} (negative: the API's clock is behind), "
            f"got {skew!r}"
        )
    return float(skew)


class RealClock:
    """Wall-clock time; ``speed`` shortens action durations and speeds up the rate-limit refill."""

    manual = False

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = _check_speed(speed)

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def __repr__(self) -> str:
        return f"RealClock(speed={self.speed})"


class ManualClock:
    """A clock that moves only when a test calls ``advance``; starts at ``start`` (default: now, whole s)."""

    manual = True

    def __init__(self, start: float | None = None, *, speed: float = 1.0) -> None:
        self._now = float(int(time.time()) if start is None else start)
        self.speed = _check_speed(speed)
        # advance() may be called from a test thread while a server thread reads now().
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the time last set by ``advance``."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards) and return the new time."""
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got {seconds!r} seconds")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now}, speed={self.speed})"

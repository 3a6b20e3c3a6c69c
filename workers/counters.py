"""Counters every process adds to and any process reads: kept in Redis, so ``/metrics`` is right with any
number of workers on any number of hosts (a process's own memory would show only its share).

One hash per family, a field per label set (``|``-joined). Durations go into fixed buckets (the field of the
smallest bucket holding the value), with their count and sum; the reader makes them cumulative, as
Prometheus histograms are. Each increment is one HINCRBY (or one pipeline for a duration): about 0.1 ms
beside requests that take tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

__all__ = ["DURATION_BUCKETS", "Counters"]

# Seconds: actions take from about one second (power) to tens of minutes (images).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_SEP = "|"


class Counters:
    """Add to and read the shared counters of one installation."""

    def __init__(self, client: redis.Redis, prefix: str = "hf") -> None:
        self.redis = client
        self.prefix = prefix

    def _key(self, family: str) -> str:
        return f"{self.prefix}:metrics:{family}"

    def add(self, family: str, labels: Iterable[str], amount: int = 1, *, pipe: Any = None) -> None:
        """Add to a counter; with ``pipe``, staged in the caller's pipeline (sent with its other writes)."""
        (pipe or self.redis).hincrby(self._key(family), _SEP.join(labels), amount)

    def observe(self, family: str, labels: Iterable[str], seconds: float, *, pipe: Any = None) -> None:
        """Count a duration into its bucket (``+Inf`` past the last), with the family's count and sum."""
        base = _SEP.join(labels)
        bucket = next((f"{b:g}" for b in DURATION_BUCKETS if seconds <= b), "+Inf")
        staged = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        staged.hincrby(self._key(family), f"{base}{_SEP}{bucket}", 1)
        staged.hincrbyfloat(self._key(f"{family}:sum"), base, max(0.0, seconds))
        if pipe is None:
            staged.execute()

    def read(self, family: str) -> dict[tuple[str, ...], int]:
        raw = self.redis.hgetall(self._key(family))
        return {tuple(_text(k).split(_SEP)): int(v) for k, v in raw.items()}

    def histogram(self, family: str) -> dict[tuple[str, ...], dict[str, Any]]:
        """Return per label set: cumulative ``buckets`` [(le, count)], ``count`` and ``sum``."""
        per: dict[tuple[str, ...], dict[str, int]] = {}
        for fields, n in self.read(family).items():
            per.setdefault(fields[:-1], {})[fields[-1]] = n
        sums = {
            tuple(_text(k).split(_SEP)): float(v)
            for k, v in self.redis.hgetall(self._key(f"{family}:sum")).items()
        }
        out: dict[tuple[str, ...], dict[str, Any]] = {}
        for labels, counts in per.items():
            running, buckets = 0, []
            for le in [f"{b:g}" for b in DURATION_BUCKETS] + ["+Inf"]:
                running += counts.get(le, 0)
                buckets.append((le, running))
            out[labels] = {"buckets": buckets, "count": running, "sum": sums.get(labels, 0.0)}
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

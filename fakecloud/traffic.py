"""Counters and the request log behind ``/_fakecloud/stats`` and ``/_fakecloud/requests`` (``/v1`` only)."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from typing import Any

__all__ = ["LOG_SIZE", "TrafficLog"]

LOG_SIZE = 200_000


class TrafficLog:
    """What came in on ``/v1`` and how it was answered; the backend calls it under its lock."""

    def __init__(self, size: int = LOG_SIZE) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        """Forget every counter and log entry (the sequence starts again at 1)."""
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.injected: Counter[str] = Counter()
        self.total = 0
        self.rate_limited = 0
        self.seq = 0
        self.entries: deque[dict[str, Any]] = deque(maxlen=self.size)

    def record(
        self,
        *,
        time: float,
        method: str,
        path: str,
        route: str,
        status: int,
        server_id: int | None = None,
        action_id: int | None = None,
        command: str | None = None,
        rate_limited: bool = False,
        fault: str | None = None,
        dropped: bool = False,
    ) -> None:
        """Count one answered ``/v1`` request and append it to the log."""
        self.total += 1
        self.counts[(method, route, status)] += 1
        if rate_limited:
            self.rate_limited += 1
        if fault:
            self.injected[fault] += 1
        self.seq += 1
        self.entries.append(
            {
                "seq": self.seq,
                "time": time,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "server_id": server_id,
                "action_id": action_id,
                "command": command,
                # Processed, answer never written: ``status`` is what the client would have been told.
                "dropped": dropped,
            }
        )

    def stats(self) -> dict[str, Any]:
        """Return the ``/_fakecloud/stats`` body."""
        rows = [
            {"method": m, "route": r, "status": s, "count": c} for (m, r, s), c in sorted(self.counts.items())
        ]
        return {
            "requests": rows,
            "total": self.total,
            "rate_limited": self.rate_limited,
            "injected_faults": dict(self.injected),
        }

    def since(self, seq: int, limit: int | None = None) -> dict[str, Any]:
        """Return log entries with a sequence number above ``seq`` and the ``next`` value to ask with."""
        first = self.entries[0]["seq"] if self.entries else self.seq + 1
        # Sequence numbers are contiguous, so the start index is arithmetic, not a scan.
        start = max(0, seq - first + 1)
        stop = None if limit is None else start + max(0, limit)
        out = list(itertools.islice(self.entries, start, stop))
        # With nothing new, hand back the caller's position (or ours, after a reset shrank the sequence).
        return {"requests": out, "next": out[-1]["seq"] if out else min(max(seq, 0), self.seq)}

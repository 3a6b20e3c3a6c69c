"""What the dashboard, ``/metrics`` and ``/api/v1/budget`` read besides runs and jobs: each project's rate
budget, the queue, and whether workers, the monitor and beat are alive. Read from Redis alone (the web
service holds no API token); the worker count comes from a broadcast ping, kept for a few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from workers.projects import DEFAULT_PROJECT
from workers.redis_values import text_hash, texts
from workers.runtime import noted_projects, wait_prefix
from workflows.beat import HEARTBEAT_KEY

__all__ = ["Liveness", "budgets", "queue_length"]

BULK_RESERVE = 0.1  # the share of the limit fleet work leaves to single runs (workers.rate_budget)
QUEUE = "hcloud_flow"


def _freshest(ages: Any) -> float | None:
    return min((a for a in ages if a is not None), default=None)


def budgets(client: redis.Redis, now: float, refill: float = 0.0, prefix: str = "hf") -> list[dict[str, Any]]:
    """Return each project's bucket as it stands now: tokens left, the limit, the refill and the reserve.

    A bucket is named by a hash of its token, never the token; the workers note which project each is
    (``hf:projects``); a bucket no worker noted is shown by its hash.
    """
    named = {
        e["bucket"]: name for name, e in noted_projects(client).items() if isinstance(e.get("bucket"), str)
    }
    out = []
    found = texts(client.scan_iter(match=f"{prefix}:rate:*", count=100))
    keys = sorted(k for k in found if k.count(":") == 2)  # not the buckets' own sub-keys (action ids)
    for key in keys:
        b = text_hash(client.hgetall(key))
        if "tokens" not in b:
            continue
        limit = float(b.get("limit") or b.get("seen_limit") or 3600)
        rate = refill if refill > 0 else limit / 3600.0
        tokens = min(limit, float(b["tokens"]) + max(0.0, now - float(b.get("ts") or now)) * rate)
        out.append(
            {
                "project": named.get(key.rsplit(":", 1)[1], key.rsplit(":", 1)[1]),
                "bucket": key.rsplit(":", 1)[1],
                "remaining": round(tokens, 1),
                "limit": limit,
                "refill_per_second": round(rate, 4),
                "bulk_reserve": round(limit * BULK_RESERVE, 1),
            }
        )
    return out


def wait_prefixes(client: redis.Redis) -> list[str]:
    """Return the Redis prefixes of every served project's waits and monitor (the workers note the projects
    in ``hf:projects``; a single-project installation's is ``hf``)."""
    names = noted_projects(client)
    return sorted({wait_prefix(DEFAULT_PROJECT), *(wait_prefix(n) for n in names)})


def queue_length(client: redis.Redis) -> int:
    return int(client.llen(QUEUE))


class Liveness:
    """Whether workers, the monitor and beat are alive: ages of their heartbeats, and the workers' ping."""

    def __init__(
        self,
        client: redis.Redis,
        ping: Callable[[], int],
        *,
        prefix: str = "hf",
        keep: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.ping, self.prefix, self.keep, self.clock = client, ping, prefix, keep, clock
        self._workers: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def _age(self, key: str) -> float | None:
        raw = self.redis.get(key)
        return max(0.0, self.clock() - float(raw)) if raw else None

    def workers(self) -> int:
        with self._lock:
            now = self.clock()
            if self._workers is None or now - self._workers[0] > self.keep:
                self._workers = (now, self.ping())
            return self._workers[1]

    def read(self) -> dict[str, Any]:
        # One monitor thread per project, all in the same workers: the freshest sign of any of them.
        prefixes = wait_prefixes(self.redis) if self.prefix == "hf" else [self.prefix]
        monitor = _freshest(self._age(f"{p}:monitor:alive") for p in prefixes)
        last_round = _freshest(self._age(f"{p}:monitor:last_round") for p in prefixes)
        beat = self._age(HEARTBEAT_KEY)
        workers = self.workers()
        return {
            "workers": workers,
            "monitor_seen_seconds": monitor,
            "monitor_last_round_seconds": last_round,
            "beat_last_tick_seconds": beat,
            # Alive: seen within the last minute (each monitor loop notes itself every 5 s, idle or not;
            # beat ticks every few seconds).
            "monitor_alive": monitor is not None and monitor < 60,
            "beat_alive": beat is not None and beat < 60,
            "queue_length": queue_length(self.redis),
        }

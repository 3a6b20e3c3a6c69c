"""The beat scheduler: celery-redbeat's, made to outlive a Redis outage and to say that it runs.

redbeat extends its Redis lock on every tick. Redis away for a moment, and the tick's ``ConnectionError``
ended the beat process; away for longer than the lock lasts, and the lock was gone when Redis came back, so
the next extend raised ``LockNotOwnedError`` and ended it too. Here a tick that cannot reach Redis waits and
tries again, and a beat whose lock lapsed takes it again if it is free or stands by if another beat took it
(that one fires the windows now; two never fire at once).

Each tick also notes when it ran (``hf:beat:last_tick``), so that ``hcloud-flow schedule list`` can say
when no beat runs and no window will fire.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis
from redis.exceptions import LockError, LockNotOwnedError

__all__ = ["HEARTBEAT_KEY", "Scheduler", "beat_seen"]

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "hf:beat:last_tick"
TICK_KEPT = 86400
# While Redis cannot be reached, look again this often (seconds), not at the usual loop interval.
OUTAGE_RETRY = 5.0


class Scheduler(RedBeatScheduler):
    """RedBeatScheduler whose tick survives a Redis outage and a lapsed lock."""

    lock: Any  # redbeat's start-up hook sets it (a redis-py Lock), or leaves None when Redis was away

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # the signature beat calls
        try:
            if self.lock_key and not self._holds_lock():
                return float(self.max_interval)  # standing by: another beat fires the windows
            interval = float(super().tick(min=min, **kwargs))
            self._note_tick()
            return interval
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("beat: Redis cannot be reached (%s); trying again in %.0f s", exc, OUTAGE_RETRY)
            return OUTAGE_RETRY
        except LockNotOwnedError:
            log.warning(
                "beat: the schedule lock lapsed during this tick; looking again in %.0f s", OUTAGE_RETRY
            )
            return OUTAGE_RETRY

    def _holds_lock(self) -> bool:
        """Return True if this beat holds the lock, taking it again if it lapsed and nobody took it."""
        if self.lock is None:
            # A standby whose first (blocking) try for the lock met a Redis outage: redbeat's start-up hook
            # gave up and left no lock object, and its tick would then fail on it. Make one and try.
            client = get_redis(self.app)
            lock: Any = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)  # as redbeat's hook sets it
            self.lock = lock
        try:
            if self.lock.owned():
                return True
        except LockError:  # pragma: no cover - owned() raises only without a token
            pass
        # The lock lapsed (Redis was away longer than it lasts) or another beat holds it.
        try:
            taken = bool(self.lock.acquire(blocking=False))
        except LockNotOwnedError:  # pragma: no cover - acquire does not raise it; belt and braces
            taken = False
        if taken:
            log.warning("beat: the schedule lock had lapsed; this beat took it again and fires the windows")
        else:
            log.info("beat: another beat holds the schedule lock; this one stands by")
        return taken

    def _note_tick(self) -> None:
        # Kept a day, not three intervals: a beat gone for longer showed as never seen (the metric's 1e9)
        # rather than how long ago it ticked, for the last minute of a standby's takeover too.
        get_redis(self.app).set(HEARTBEAT_KEY, repr(time.time()), ex=TICK_KEPT)


def beat_seen(client: redis.Redis, interval: float) -> float | None:
    """Return when a beat last ticked (UNIX time), or None if none did within three of its ``interval``."""
    raw = client.get(HEARTBEAT_KEY)
    if not raw or time.time() - float(raw) > 3 * interval:
        return None
    return float(raw)

"""The beat scheduler outlives a Redis outage, takes a lapsed lock back, and stands by behind another beat.

Found by an operator: beat died on a Redis outage (``LockNotOwnedError: Cannot extend a lock that's no
longer owned``) and no window fired again until someone restarted it. The scheduler runs here in process
against a redis-server of our own, which the test stops and starts (without persistence, so the lock is
gone when it comes back, as after an outage longer than the lock lasts).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from redbeat.schedulers import acquire_distributed_beat_lock

from workflows.beat import HEARTBEAT_KEY, OUTAGE_RETRY, Scheduler, beat_seen

from ..support.processes import RedisServer

pytestmark = pytest.mark.integration


def scheduler(redis_server: RedisServer) -> Scheduler:
    app = Celery("beat-outage", broker=redis_server.url, set_as_current=False)
    app.conf.update(
        redbeat_redis_url=redis_server.url,
        redbeat_key_prefix="hf:redbeat:",
        redbeat_lock_timeout=30,
        beat_max_loop_interval=2,
    )
    sched = Scheduler(app=app)
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=sched))  # what beat_init does
    return sched


def test_beat_rides_out_an_outage_and_takes_its_lapsed_lock_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        sched = scheduler(server)
        assert sched.tick() <= 2
        assert beat_seen(server.client(), 2) is not None, "each tick notes itself for `schedule list`"

        server.stop()
        assert sched.tick() == OUTAGE_RETRY, "Redis away: wait and look again, do not die"
        assert sched.tick() == OUTAGE_RETRY

        server.start()  # empty: the lock and the heartbeat are gone
        assert beat_seen(server.client(), 2) is None
        assert sched.tick() <= 2, "the lapsed lock was free: this beat took it again and ticks on"
        assert sched.lock.owned()
        assert beat_seen(server.client(), 2) is not None
        # A tick older than three intervals is not "seen", but its age stays readable (the dashboard and
        # /metrics read it): the key had expired with it, and a beat gone a while showed as never seen.
        client = server.client()
        client.set(HEARTBEAT_KEY, repr(time.time() - 7))
        assert beat_seen(client, 2) is None and client.get(HEARTBEAT_KEY) is not None
        sched.tick()
        assert client.ttl(HEARTBEAT_KEY) > 3600, "a tick is kept long enough to tell its age"
    finally:
        server.stop()


def test_a_beat_whose_lock_another_beat_took_stands_by_and_fires_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        sched = scheduler(server)
        client = server.client()
        client.set(sched.lock_key, "another-beat", px=30_000)  # ours lapsed; another beat took it
        client.delete(HEARTBEAT_KEY)
        assert sched.tick() == 2, "stands by until the next look"
        assert client.get(sched.lock_key) == b"another-beat", "the other beat's lock is left alone"
        assert beat_seen(client, 2) is None, "a standby beat does not tick the schedule"
        client.delete(sched.lock_key)  # the other beat is gone
        assert sched.tick() <= 2 and sched.lock.owned()
    finally:
        server.stop()


def test_a_standby_whose_first_try_for_the_lock_met_an_outage_takes_it_later(tmp_path: Path) -> None:
    """Found by an outside tester: redbeat's start-up hook gave up on a Redis outage and left no lock
    object; the standby's next tick then died on ``None.extend``, leaving no beat to fail over to."""
    server = RedisServer(tmp_path / "redis")
    try:
        app = Celery("beat-standby", broker=server.url, set_as_current=False)
        app.conf.update(
            redbeat_redis_url=server.url, redbeat_key_prefix="hf:redbeat:", beat_max_loop_interval=2
        )
        sched = Scheduler(app=app)  # no lock taken: what the failed start-up hook leaves
        assert sched.lock is None
        client = server.client()
        client.set(sched.lock_key, "active-beat", px=30_000)
        assert sched.tick() == 2, "another beat holds the lock: stand by, do not die"
        client.delete(sched.lock_key)
        assert sched.tick() <= 2 and sched.lock.owned(), "the active beat is gone: take over"
    finally:
        server.stop()

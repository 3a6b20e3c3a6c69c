"""Chaos, part two: the monitor's process killed and a persistent Redis restarted mid-fleet (a file of their
own, so the two test processes share the chaos suite's minutes)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workflows.api import Jobs
from workflows.fleet import JobStore

from ..support.audit import leaks, redis_blobs
from ..support.cloud import TOKEN, Control
from ..support.processes import RedisServer, Worker, client_app, wait_until, worker_env
from .common import CHAOS_ENV, fleet_ids, posts_by, received_twice, report

pytestmark = [pytest.mark.chaos, pytest.mark.long, pytest.mark.timeout(300)]


def test_monitor_process_killed_mid_fleet(
    cloud: Any, redis_server: RedisServer, app: Celery, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = fleet_ids(cloud, 20)
    Control(cloud.control_url).send("PUT", "/config", {"durations": {"create_image": 80.0}})  # 4 s
    worker = Worker("chaos-monitor", worker_env(redis_server.url, cloud.base_url, **CHAOS_ENV), logdir)
    client = redis_server.client()
    jobs = Jobs(app, JobStore(client))
    try:
        job = jobs.start("snapshot", servers=ids, max_concurrency="10", max_errors="0")
        parked = wait_until(lambda: client.zcard("hf:waits"), 30, "waits to be parked with the monitor")
        worker.kill()  # the only worker: its monitor thread dies with it
        time.sleep(2.0)
        worker.start()
        done = jobs.wait(job["id"], timeout=120, poll=0.5)
    finally:
        worker.stop()
    posts = posts_by(Control(cloud.control_url), ids)
    report(
        capsys,
        "the process running the monitor SIGKILLed mid-fleet",
        {
            "waits parked at the kill": parked,
            "job": done["state"],
            "outcomes": done["counts"],
            "POSTs per server and step": sorted(Counter(posts.values()).items()),
        },
    )
    assert done["state"] == "succeeded" and done["counts"].get("succeeded") == 20
    assert all(posts[(s, c)] == 1 for s in ids for c in ("shutdown", "create_image", "poweron"))


def test_persistent_redis_restarted_mid_fleet(
    cloud: Any, tmp_path: Path, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = fleet_ids(cloud, 20)
    Control(cloud.control_url).send("PUT", "/config", {"durations": {"create_image": 80.0}})
    redis_aof = RedisServer(tmp_path / "aof", appendonly=True)
    worker = Worker("chaos-redis", worker_env(redis_aof.url, cloud.base_url, **CHAOS_ENV), logdir)
    app = client_app(redis_aof.url)
    try:
        jobs = Jobs(app, JobStore(redis_aof.client()))
        job = jobs.start("snapshot", servers=ids, max_concurrency="10", max_errors="0")
        control = Control(cloud.control_url)

        def up() -> bool:
            # A worker that lost Redis while it held an unacknowledged message used to exit ("Unrecoverable
            # error: AttributeError ... 'hostname'", kombu putting the message back on a closed connection).
            if worker.proc is None or worker.proc.poll() is not None:
                raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-3000:]}")
            return True

        wait_until(lambda: redis_aof.client().zcard("hf:waits"), 30, "waits to be parked")
        redis_aof.stop()  # SIGTERM: Redis writes its append-only file and exits
        time.sleep(2.0)
        redis_aof.start()
        # Once more while a step waits for the answer to its POST (answers slowed down): its message is
        # unacknowledged, in the worker's hands, when Redis goes away.
        control.send("PUT", "/config", {"faults": {"slow": 1.0, "slow_seconds": 2.0}})
        seen = len(control.posts())
        wait_until(lambda: up() and len(control.posts()) > seen, 60, "a step to post")
        redis_aof.stop()
        control.send("PUT", "/config", {"faults": "none"})
        time.sleep(1.0)
        redis_aof.start()
        wait_until(lambda: up() and jobs.status(job["id"])["state"] != "running", 150, "the job to end")
        jobs = Jobs(app, JobStore(redis_aof.client()))
        done = jobs.wait(job["id"], timeout=150, poll=0.5)
        # This Redis is gone after the test: audit it for the token now, as the suite's audit does its own.
        assert not leaks({TOKEN.encode()}, {"redis": redis_blobs(redis_aof.client())})
    finally:
        app.close()
        worker.stop()
        redis_aof.stop()
    posts = posts_by(Control(cloud.control_url), ids)
    report(
        capsys,
        "persistent (AOF) redis-server restarted mid-fleet",
        {
            "restarts": "2 (2 s while waits were parked, 1 s while a step waited for its POST's answer)",
            "worker": "rode out both restarts, the second with a step's message in its hands",
            "job": done["state"],
            "outcomes": done["counts"],
            "tasks received more than once": received_twice([worker]),
            "POSTs per server and step": sorted(Counter(posts.values()).items()),
        },
    )
    assert done["state"] == "succeeded" and done["counts"].get("succeeded") == 20
    assert all(posts[(s, c)] == 1 for s in ids for c in ("shutdown", "create_image", "poweron"))

"""Chaos: workers killed at random and a faulty API (monitor kill and Redis restart: test_chaos_restarts).

Each scenario runs a real fleet job (real Redis, real `celery worker` processes, fakecloud over HTTP), does
damage while it runs, then checks from fakecloud's own request log that every server got exactly one of
each destructive action and that every run ended. Each prints what it did and what it saw.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workflows.api import Jobs
from workflows.fleet import JobStore

from ..support.cloud import Control
from ..support.processes import RedisServer, Worker, worker_env
from .common import CHAOS_ENV, KILLS, fleet_ids, posts_by, received_twice, report

pytestmark = [pytest.mark.chaos, pytest.mark.long, pytest.mark.timeout(300)]


def test_workers_killed_at_random_during_a_fleet_rebuild(
    cloud: Any, redis_server: RedisServer, app: Celery, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = fleet_ids(cloud, 40)
    env = worker_env(redis_server.url, cloud.base_url, **CHAOS_ENV)
    workers = [Worker(f"chaos-kill-{n}", env, logdir) for n in range(2)]
    rng = random.Random(20261128)
    jobs = Jobs(app, JobStore(redis_server.client()))
    kills: list[str] = []
    try:
        job = jobs.start(
            "rebuild", servers=ids, params={"image": "ubuntu-24.04"}, max_concurrency="8", max_errors="0"
        )
        while len(kills) < KILLS and jobs.status(job["id"])["state"] == "running":
            time.sleep(rng.uniform(1.0, 3.0))
            if jobs.status(job["id"])["state"] == "running":
                victim = rng.choice(workers)
                victim.kill()
                kills.append(f"{victim.name}@{jobs.status(job['id'])['counts']}")
                victim.start()
        done = jobs.wait(job["id"], timeout=240, poll=0.5)
    finally:
        for w in workers:
            w.stop()
    posts = posts_by(Control(cloud.control_url), ids)
    report(
        capsys,
        "workers SIGKILLed during a 40-server fleet rebuild",
        {
            "kills": len(kills),
            "killed at (job counts)": kills[:3],
            "tasks received more than once": received_twice(workers),
            "job": done["state"],
            "outcomes": done["counts"],
            "create_image POSTs per server": sorted(Counter(posts[(s, "create_image")] for s in ids).items()),
            "rebuild POSTs per server": sorted(Counter(posts[(s, "rebuild")] for s in ids).items()),
        },
    )
    assert len(kills) == KILLS, "the job ended before every kill was made"
    assert done["state"] == "succeeded" and done["counts"].get("succeeded") == 40, done["counts"]
    assert all(posts[(s, "create_image")] == 1 and posts[(s, "rebuild")] == 1 for s in ids)
    assert all(posts[(s, "shutdown")] == 1 for s in ids)


def test_faulty_api_every_run_ends_and_failures_say_why(
    cloud: Any, redis_server: RedisServer, app: Celery, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = fleet_ids(cloud, 40)
    control = Control(cloud.control_url)
    rng = random.Random(7)
    deaf = rng.sample(ids, 6)
    for sid in deaf:
        control.send("PATCH", f"/servers/{sid}", {"acpi": False})
    control.send(
        "PUT", "/config", {"faults": "502=0.02,503=0.02,504=0.01,429=0.05,conflict=0.05,action_error=0.03"}
    )
    worker = Worker("chaos-faults", worker_env(redis_server.url, cloud.base_url, **CHAOS_ENV), logdir)
    jobs = Jobs(app, JobStore(redis_server.client()))
    try:
        job = jobs.start("snapshot", servers=ids, max_concurrency="10", max_errors="100%", timeout=180)
        done = jobs.wait(job["id"], timeout=240, poll=0.5)
    finally:
        control.send("PUT", "/config", {"faults": "none"})
        worker.stop()
    stats = control.get("/stats")
    from workers.run_store import RunStore

    runs = RunStore(redis_server.client())
    records = [runs.get(e["run_id"]) for e in done["outcomes"].values() if e.get("run_id")]
    failed = [r for r in records if r and r["state"] == "failed"]
    posts = posts_by(control, ids)
    report(
        capsys,
        "faulty API (5% 5xx, 5% 429, 5% conflict, 3% failed actions, 6 ACPI-deaf guests)",
        {
            "injected faults served": stats["injected_faults"],
            "job": done["state"],
            "outcomes": done["counts"],
            "failures": [f"{r['error']['code']} at {r['error']['step']}" for r in failed][:8],
            "forced power-offs": sum(posts[(s, "poweroff")] for s in deaf),
        },
    )
    assert sum(stats["injected_faults"].values()) > 20, "the faults were really served"
    # --max-errors 100%: the job never stops early, and says whether every server succeeded.
    unsucceeded = failed or done["counts"].get("refused") or done["counts"].get("skipped")
    assert done["state"] == ("completed_with_failures" if unsucceeded else "succeeded"), done["state"]
    assert all(r is not None and r["state"] in ("succeeded", "failed") for r in records), (
        "no run lost or stuck"
    )
    assert len(records) + done["counts"].get("refused", 0) == 40
    for r in failed:
        err = r["error"]
        assert err["server_id"] == r["server_id"] and err.get("step") and err.get("code"), err
        assert err.get("action_id") or err["type"] in ("APIError", "TransportError"), err
    assert all(n == 1 for n in posts.values()), "never two successful POSTs of one action on one server"

"""The shared rate budget: a fleet-sized load on a nearly empty project budget meets no 429.

fakecloud runs its real default limit (3600 an hour) at speed 60, so it refills 60 requests a second. The
test first spends the project's budget down to a few requests with plain GETs, as another tool on the same
project would; the workers learn that from the first answer's headers and pace every request after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, signature

from ..conftest import start_cloud
from ..support.cloud import Api, Control, drain
from ..support.processes import RedisServer, Worker, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=40, speed=60.0, seed=5, rate_limit=3600)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    env = worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="60")
    w = Worker("rate", env, logdir, concurrency=8)
    yield w
    w.stop()


def test_fleet_load_on_an_empty_budget_gets_no_429(worker: Worker, celery_client: Celery, cloud: Any) -> None:
    control, api = Control(cloud.control_url), Api(cloud.base_url)
    ids = api.server_ids()
    for sid in ids:
        control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    left = drain(cloud.base_url, leave=20)
    assert left <= 20
    before = control.get("/stats")
    results = [
        chain(
            signature("hcloud_flow.power_off", args=(sid,), app=celery_client),
            signature("hcloud_flow.power_on", app=celery_client),
        ).apply_async()
        for sid in ids
    ]
    assert all(r.get(timeout=120)["status"] == "success" for r in results)
    after = control.get("/stats")
    spent = after["total"] - before["total"]
    assert spent > left + 60, "the load really needed the refill, not just what was left"
    assert after["rate_limited"] == before["rate_limited"] == 0
    assert all(len(control.posts(sid)) == 2 for sid in ids)

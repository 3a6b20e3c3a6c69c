"""Workers killed with SIGKILL mid-wait and mid-POST: the chain completes, with one POST per step.

These workers run with a short Redis visibility timeout (12 s), so a message whose worker died is handed
out again within seconds instead of the production default of ten minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, signature

from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, cloud: Any) -> dict[str, str]:
    return worker_env(
        redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_VISIBILITY_TIMEOUT="12"
    )


@pytest.fixture(scope="module")
def api(cloud: Any) -> Api:
    return Api(cloud.base_url)


@pytest.fixture()
def solo(env: dict[str, str], logdir: Path) -> Iterator[Worker]:
    w = Worker("crash", env, logdir)
    yield w
    w.stop()


def steps(control: Control, sid: int) -> list[str]:
    return [p["route"].rsplit("/", 1)[-1] for p in control.posts(sid)]


def test_worker_killed_mid_wait(solo: Worker, celery_client: Celery, control: Control, api: Api) -> None:
    sid = api.server_ids()[0]
    control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    control.send("PUT", "/config", {"durations": {"create_image": 100.0}})  # 5 s at speed 20
    try:
        flow = chain(
            signature("hcloud_flow.power_off", args=(sid,), app=celery_client),
            signature("hcloud_flow.create_image", app=celery_client),
            signature("hcloud_flow.power_on", app=celery_client),
        )
        res = flow.apply_async()
        wait_until(lambda: control.posts(sid, "create_image"), 30, "the create_image POST")
        solo.kill()
        time.sleep(1.0)
        solo.start()
        result = res.get(timeout=60)
    finally:
        control.send("PUT", "/config", {"durations": {"create_image": 20.0}})
    assert result["status"] == "success"
    assert steps(control, sid) == ["poweroff", "create_image", "poweron"]


def test_worker_killed_mid_post(solo: Worker, celery_client: Celery, control: Control, api: Api) -> None:
    sid = api.server_ids()[1]
    control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    # Every answer is held back 3 s: the worker is killed while its POST is in flight, after fakecloud
    # has already started the action. The redelivered step must find that action, not post again.
    control.send("PUT", "/config", {"faults": {"slow": 1.0, "slow_seconds": 3.0}})
    try:
        flow = chain(
            signature("hcloud_flow.power_off", args=(sid,), app=celery_client),
            signature("hcloud_flow.power_on", app=celery_client),
        )
        res = flow.apply_async()
        # fakecloud logs the POST once it has acted on it, 3 s before the answer leaves: kill in between.
        wait_until(
            lambda: [r for r in control.requests_log() if r["server_id"] == sid and r["method"] == "POST"],
            30,
            "the power_off POST to be processed",
        )
        solo.kill()
    finally:
        control.send("PUT", "/config", {"faults": "none"})
    solo.start()
    result = res.get(timeout=90)
    assert result["status"] == "success"
    assert steps(control, sid) == ["poweroff", "poweron"]
    first = result["history"][0]
    assert first["attached"] is True, "the redelivered step re-attached to the action its POST started"

"""Workers killed with SIGKILL mid-wait and mid-POST: the chain completes, with one POST per step.

These workers run with a short Redis visibility timeout (12 s), so a message whose worker died is handed
out again within seconds instead of the production default of ten minutes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, signature

from workers.run_store import RunStore
from workflows.api import Runs

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


def _kill_while_answer_is_held(solo: Worker, control: Control, sid: int, command: str) -> None:
    """Hold every answer back 3 s and kill the worker once fakecloud has acted on ``command``'s POST."""
    control.send("PUT", "/config", {"faults": {"slow": 1.0, "slow_seconds": 3.0}})
    try:
        wait_until(lambda: control.posts(sid, command), 60, f"the {command} POST to be processed")
        solo.kill()
    finally:
        control.send("PUT", "/config", {"faults": "none"})


def test_a_run_cancelled_while_its_step_was_posting_keeps_the_action_it_made(
    solo: Worker, celery_client: Celery, control: Control, api: Api, redis_server: RedisServer
) -> None:
    """An outside test: the redelivered step met the cancel before it looked for the action its dead try
    had posted, so the run said the step was cancelled while the snapshot it made stood in the project."""
    runs = Runs(celery_client, RunStore(redis_server.client()))
    sid = api.server_ids()[2]
    control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    run_id = runs.submit("snapshot", server=sid, description="made-before-the-cancel")
    _kill_while_answer_is_held(solo, control, sid, "create_image")
    runs.cancel(run_id)
    solo.start()
    record = runs.wait(run_id, timeout=120, poll=0.2)

    assert steps(control, sid) == ["shutdown", "create_image", "poweron"], "one POST each, restore last"
    made = record["steps"][1]
    assert made["status"] == "succeeded" and made["action_id"], made
    image_id = made["outputs"]["image"]["id"]
    assert api.get(f"/images/{image_id}")["image"]["status"] == "available"
    assert record["state"] == "cancelled" and record["steps"][2]["status"] == "cancelled"
    assert record["left"]["status"] == "running" and "after the cancel" in record["left"]["why"]


def test_a_restore_power_on_whose_answer_was_lost_is_reported_as_done(
    solo: Worker, celery_client: Celery, control: Control, api: Api, redis_server: RedisServer
) -> None:
    """An outside test: the redelivered restore found the server running (its own lost power-on had started
    it) and said "still running: it was never stopped" of a server the run had shut down."""
    runs = Runs(celery_client, RunStore(redis_server.client()))
    sid = api.server_ids()[3]
    control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    fail = {"command": "create_image", "code": "action_failed", "message": "boom"}
    control.send("PATCH", f"/servers/{sid}", {"fail_next": fail})
    run_id = runs.submit("snapshot", server=sid)
    _kill_while_answer_is_held(solo, control, sid, "poweron")
    assert runs.status(run_id)["restore"]["state"] == "powering_on"
    assert run_id in [r["id"] for r in runs.list(active=True)], "not ended while its restore is under way"
    solo.start()
    record = runs.wait(run_id, timeout=120, poll=0.2)

    assert steps(control, sid) == ["shutdown", "create_image", "poweron"]
    assert record["state"] == "failed" and record["restore"]["state"] == "done"
    assert record["restore"]["action_id"] == control.posts(sid, "poweron")[0]["action_id"]
    assert record["left"] == {"status": "running", "why": "powered on again after the failure"}
    assert record["finished"] >= record["steps"][1]["finished"]


@pytest.mark.parametrize("started_by_someone", [True, False])
def test_a_skip_if_status_step_whose_dead_try_posted_nothing_asks_the_server(
    solo: Worker,
    celery_client: Celery,
    control: Control,
    api: Api,
    redis_server: RedisServer,
    started_by_someone: bool,
) -> None:
    """A reviewer: a restore power-on whose earlier try died after noting its bound but before its POST went
    out posted a power-on anyway, though someone had started the server meanwhile. Its ledger is written
    here as that try left it; the step finds no action of its own, and only then asks the server."""
    sid = api.server_ids()[4]
    control.send(
        "PATCH", f"/servers/{sid}", {"status": "running" if started_by_someone else "off", "acpi": True}
    )
    task_id = f"dead-try-{uuid.uuid4().hex[:8]}"
    redis_server.client().hset(f"hf:step:{task_id}", "posting_after", 0)  # noted, then the process died
    before = len(control.posts(sid, "poweron"))
    result = celery_client.send_task(
        "hcloud_flow.power_on", args=[sid], kwargs={"skip_if_status": "running"}, task_id=task_id
    ).get(timeout=60)
    posted = len(control.posts(sid, "poweron")) - before
    if started_by_someone:
        assert result.get("skipped") and posted == 0, result
    else:
        assert not result.get("skipped") and posted == 1 and api.server(sid)["status"] == "running", result

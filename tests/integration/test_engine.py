"""The engine end to end: real Redis, real celery workers, fakecloud over HTTP.

Each test takes servers of its own from the module's fakecloud and puts them in the state it needs
through fakecloud's test controls, so tests do not depend on each other's order.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from celery import Celery, chain, signature

# Celery rebuilds a failure's own class only from a module the client has imported, as any caller that
# wants ActionFailed rather than a look-alike must.
import workers.errors  # noqa: F401

from ..support.cloud import Api, Control
from ..support.processes import Worker, wait_until

pytestmark = pytest.mark.integration

RESULT_TIMEOUT = 60


@pytest.fixture(scope="module")
def api(cloud: Any) -> Api:
    return Api(cloud.base_url)


@pytest.fixture(scope="module")
def servers(api: Api) -> Any:
    return itertools.cycle(api.server_ids())


def fresh(servers: Any, control: Control, api: Api, status: str = "running", **patch: Any) -> int:
    """Take the next server, make it idle in ``status`` with ACPI honoured, and return its id."""
    while True:
        sid = next(servers)
        if not api.get(f"/servers/{sid}/actions", status="running")["actions"]:
            break
    control.send("PATCH", f"/servers/{sid}", {"status": status, "acpi": True, **patch})
    return int(sid)


def sig(app: Celery, name: str, *args: Any, **kwargs: Any) -> Any:
    return signature(f"hcloud_flow.{name}", args=args, kwargs=kwargs, app=app)


@pytest.mark.parametrize(
    ("name", "status", "kwargs", "expect_status"),
    [
        ("power_on", "off", {}, "running"),
        ("power_off", "running", {}, "off"),
        ("reboot", "running", {}, "running"),
        ("reset", "running", {}, "running"),
        ("shutdown", "running", {}, "off"),
        ("reset_password", "running", {}, "running"),
        ("enable_rescue", "running", {"type": "linux64"}, "running"),
        ("disable_rescue", "running", {}, "running"),
        ("create_image", "off", {"description": "it-test", "labels": {"purpose": "test"}}, "off"),
        ("rebuild", "running", {"image": "ubuntu-24.04"}, "running"),
    ],
)
def test_each_action_alone(
    worker: Worker,
    celery_client: Celery,
    control: Control,
    api: Api,
    servers: Any,
    name: str,
    status: str,
    kwargs: dict[str, Any],
    expect_status: str,
) -> None:
    sid = fresh(servers, control, api, status)
    result = celery_client.send_task(f"hcloud_flow.{name}", args=[sid], kwargs=kwargs).get(
        timeout=RESULT_TIMEOUT
    )
    assert result["server_id"] == sid
    assert result["status"] == "success"
    assert result["action"] == name
    action = api.get(f"/actions/{result['action_id']}")["action"]
    assert action["status"] == "success"
    assert action["command"] == result["command"]
    assert len(control.posts(sid)) == 1, "exactly one action POST for the step"
    assert api.server(sid)["status"] == expect_status
    if name == "create_image":
        image = api.get(f"/images/{result['outputs']['image']['id']}")["image"]
        assert image["status"] == "available"
        assert image["labels"]["purpose"] == "test"
    if name in ("reset_password", "enable_rescue", "rebuild"):
        # No sealing key in this module's workers: the password is dropped, with a notice.
        assert result["outputs"]["root_password"]["sealed"] is None
        assert "dropped" in result["outputs"]["root_password"]["notice"]
    if name == "enable_rescue":
        assert api.server(sid)["rescue_enabled"] is True


def test_chain_forces_power_off_when_acpi_is_ignored(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any
) -> None:
    sid = fresh(servers, control, api, "running", acpi=False)
    flow = chain(
        # The user's own label for the step: the forced fallback follows the action, not the name.
        sig(celery_client, "shutdown", sid, step="drain-then-stop", grace=1),
        sig(celery_client, "create_image", description="before-maintenance"),
        sig(celery_client, "power_on"),
    )
    result = flow.apply_async().get(timeout=RESULT_TIMEOUT)
    assert result["action"] == "power_on"
    shutdown_step, image_step = result["history"]
    assert shutdown_step["forced"] is True
    assert shutdown_step["server_status"] == "off"
    assert image_step["image_status"] == "available"
    assert api.server(sid)["status"] == "running"
    commands = [p["route"].rsplit("/", 1)[-1] for p in control.posts(sid)]
    assert commands == ["shutdown", "poweroff", "create_image", "poweron"]


def test_failed_action_fails_the_chain_with_names(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any
) -> None:
    sid = fresh(servers, control, api, "off")
    control.send(
        "PATCH", f"/servers/{sid}", {"fail_next": {"command": "create_image", "code": "action_failed"}}
    )
    flow = chain(sig(celery_client, "create_image", sid), sig(celery_client, "power_on"))
    res = flow.apply_async()
    with pytest.raises(Exception) as info:
        res.get(timeout=RESULT_TIMEOUT)
    exc = info.value
    assert type(exc).__name__ == "ActionFailed"
    text = str(exc)
    assert f"server {sid}" in text and "create_image" in text and "action_failed" in text
    assert "action " in text
    assert res.state == "FAILURE"
    assert [p["route"].rsplit("/", 1)[-1] for p in control.posts(sid)] == ["create_image"], (
        "power_on never ran"
    )


def test_locked_server_waits_for_the_running_action(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any
) -> None:
    sid = fresh(servers, control, api, "running")
    control.send("PUT", "/config", {"durations": {"reset": 40.0}})  # 2 s at speed 20
    try:
        blocker = api.post(f"/servers/{sid}/actions/reset")
        assert blocker.status_code == 201
        result = celery_client.send_task("hcloud_flow.power_off", args=[sid]).get(timeout=RESULT_TIMEOUT)
    finally:
        control.send("PUT", "/config", {"durations": {"reset": 4.0}})
    assert result["status"] == "success"
    log = [r for r in control.requests_log() if r["server_id"] == sid and r["method"] == "POST"]
    assert [r["status"] for r in log if r["route"].endswith("/poweroff")][-1] == 201
    assert any(r["status"] == 423 for r in log), "the first try met 423 locked"
    assert len([r for r in log if r["route"].endswith("/poweroff") and r["status"] == 201]) == 1


@pytest.mark.parametrize("faults", [{"conflict": 0.5}, {"429": 0.4}, {"503": 0.3, "502": 0.2}])
def test_transient_api_errors_are_retried(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any, faults: dict[str, float]
) -> None:
    ids = [fresh(servers, control, api, "running") for _ in range(4)]
    before = control.get("/stats")
    control.send("PUT", "/config", {"faults": faults})
    try:
        results = [
            chain(sig(celery_client, "power_off", sid), sig(celery_client, "power_on")).apply_async()
            for sid in ids
        ]
        outcomes = [r.get(timeout=RESULT_TIMEOUT) for r in results]
    finally:
        control.send("PUT", "/config", {"faults": "none"})
    assert all(o["status"] == "success" for o in outcomes)
    after = control.get("/stats")
    injected = sum(r["count"] for r in after["requests"] if r["status"] in (409, 429, 502, 503)) - sum(
        r["count"] for r in before["requests"] if r["status"] in (409, 429, 502, 503)
    )
    assert injected > 0, "the faults were really served"
    for sid in ids:
        posts = control.posts(sid)
        assert [p["route"].rsplit("/", 1)[-1] for p in posts] == ["poweroff", "poweron"]


def test_a_duplicate_of_a_finished_step_is_ignored(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any, redis_server: Any
) -> None:
    sid = fresh(servers, control, api, "running")
    first = celery_client.send_task("hcloud_flow.power_off", args=[sid])
    assert first.get(timeout=RESULT_TIMEOUT)["status"] == "success"
    control.send("PATCH", f"/servers/{sid}", {"status": "running"})  # the server moved on since
    # The same message again (as a redelivery or a monitor re-dispatch would bring it).
    celery_client.send_task("hcloud_flow.power_off", args=[sid], task_id=first.id)
    log = worker.log
    wait_until(lambda: log.read_bytes().count(f"[{first.id}] ignored".encode()) >= 2, 30, "the duplicate")
    assert len(control.posts(sid)) == 1, "no second power off"
    assert not redis_server.client().zscore("hf:waits", first.id), "nothing parked again"
    assert api.server(sid)["status"] == "running"


def test_an_action_task_outside_a_run_takes_the_servers_lock(
    worker: Worker, celery_client: Celery, control: Control, api: Api, servers: Any, redis_server: Any
) -> None:
    from workers.run_store import RunStore

    sid = fresh(servers, control, api, "running")
    store = RunStore(redis_server.client())
    assert store.acquire(sid, "run-held-by-someone", 60) is None
    refused = sig(celery_client, "rebuild", sid, image="debian-12").apply_async()
    with pytest.raises(Exception) as info:
        refused.get(timeout=RESULT_TIMEOUT)
    assert type(info.value).__name__ == "ServerBusy"
    assert "run-held-by-someone" in str(info.value)
    assert control.posts(sid) == [], "nothing was posted while a run held the server"
    assert store.holder(sid) == "run-held-by-someone", "the refused task left the run's lock alone"
    # Naming the run (as a "previous step's result" written by hand, or in the options) does not let a task
    # the run never planned into its hold on the server: an outside test powered a server off this way in
    # the middle of another run's snapshot.
    steps = [{"index": 0, "name": "reboot", "task_id": "planned-step-0"}]
    store.create(
        {"id": "run-held-by-someone", "server_id": sid, "workflow": "w", "steps": steps, "lock_ttl": 60}
    )
    forged = [
        sig(celery_client, "power_off", {"server_id": sid, "run_id": "run-held-by-someone"}),
        sig(celery_client, "power_off", sid, run_id="run-held-by-someone"),
        sig(celery_client, "power_off", {"server_id": sid, "run_id": "no-such-run"}),
    ]
    for forgery in forged:
        with pytest.raises(Exception) as info:
            forgery.apply_async().get(timeout=RESULT_TIMEOUT)
        assert type(info.value).__name__ == "ServerBusy", info.value
    assert control.posts(sid) == [], "nothing was posted in the run's hold"
    held = store.get("run-held-by-someone", live=False)
    assert held is not None and held["state"] == "queued" and held["steps"][0]["status"] == "pending"
    assert store.holder(sid) == "run-held-by-someone", "nor did their failures end the run or free the server"
    store.release(sid, "run-held-by-someone")
    # Free again: a user's chain of raw tasks holds the server across its steps and gives it back after.
    flow = chain(sig(celery_client, "power_off", sid), sig(celery_client, "power_on"))
    assert flow.apply_async().get(timeout=RESULT_TIMEOUT)["action"] == "power_on"
    assert wait_until(lambda: store.holder(sid) is None, 10, "the chain to free the server")

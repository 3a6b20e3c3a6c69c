"""Every built-in workflow end to end, each refusal, queueing and cancel, checked against fakecloud."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workers.errors import BadInput, ServerBusy
from workers.run_store import RunStore
from workers.server_actions import ACTIONS
from workflows.api import Runs

from ..conftest import start_cloud
from ..support.audit import redis_blobs
from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, wait_until, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=60, speed=20.0, seed=11)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    env = worker_env(
        redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_DEADLINES="shutdown=8"
    )
    w = Worker("workflows", env, logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def runs(worker: Worker, celery_client: Celery, redis_server: RedisServer) -> Runs:
    return Runs(celery_client, RunStore(redis_server.client()))


@pytest.fixture(scope="module")
def api(cloud: Any) -> Api:
    return Api(cloud.base_url)


@pytest.fixture(scope="module")
def pool(api: Api) -> Iterator[int]:
    return iter(api.server_ids())


def take(pool: Iterator[int], control: Control, status: str = "running", **patch: Any) -> int:
    sid = next(pool)
    control.send("PATCH", f"/servers/{sid}", {"status": status, "acpi": True, **patch})
    return sid


def posted(control: Control, sid: int) -> list[str]:
    return [p["route"].rsplit("/", 1)[-1] for p in control.posts(sid)]


def run(runs: Runs, workflow: str, sid: int, **params: Any) -> dict[str, Any]:
    run_id = runs.submit(workflow, server=sid, **params)
    return runs.wait(run_id, timeout=90, poll=0.2)


CASES = [
    ("power-on", "off", {}, ["poweron"], "running"),
    ("power-off", "running", {}, ["poweroff"], "off"),
    ("shutdown", "running", {}, ["shutdown"], "off"),
    ("reboot", "running", {}, ["reboot"], "running"),
    ("reset", "running", {}, ["reset"], "running"),
    (
        "snapshot",
        "running",
        {"description": "nightly", "labels": {"kind": "nightly"}},
        ["shutdown", "create_image", "poweron"],
        "running",
    ),
    ("snapshot", "off", {}, ["create_image"], "off"),
    ("rebuild", "running", {"image": "debian-12"}, ["shutdown", "create_image", "rebuild"], "running"),
    (
        "rebuild",
        "running",
        {"image": "ubuntu-24.04", "no_snapshot": True},
        ["shutdown", "rebuild"],
        "running",
    ),
    ("rescue", "running", {"ssh_keys": []}, ["enable_rescue", "reset"], "running"),
    ("rescue", "off", {}, ["enable_rescue", "poweron"], "running"),
    ("rescue-off", "running", {}, ["disable_rescue", "reboot"], "running"),
    ("reset-password", "running", {}, ["reset_password"], "running"),
]


@pytest.mark.parametrize(
    ("workflow", "before", "params", "posts", "after"), CASES, ids=[f"{c[0]}-from-{c[1]}" for c in CASES]
)
def test_workflow_end_to_end(
    runs: Runs,
    control: Control,
    api: Api,
    pool: Iterator[int],
    workflow: str,
    before: str,
    params: dict[str, Any],
    posts: list[str],
    after: str,
) -> None:
    sid = take(pool, control, before)
    images_before = {i["id"] for i in api.get("/images", type="snapshot")["images"]}
    record = run(runs, workflow, sid, **params)
    assert record["state"] == "succeeded", record.get("error")
    assert posted(control, sid) == posts
    assert api.server(sid)["status"] == after
    assert all(step["status"] == "succeeded" for step in record["steps"])
    assert all(step.get("action_id") or step.get("skipped") for step in record["steps"])
    assert record["finished"] >= record["created"]
    new_images = [i for i in api.get("/images", type="snapshot")["images"] if i["id"] not in images_before]
    assert len(new_images) == posts.count("create_image")
    assert all(i["status"] == "available" for i in new_images)
    if workflow == "snapshot" and params.get("labels"):
        assert new_images[0]["labels"]["kind"] == "nightly"
    if workflow == "rebuild":
        assert api.server(sid)["image"]["name"] == params["image"]
    if workflow == "reset-password":
        assert "notice" in record["steps"][0]["outputs"]["root_password"]


def test_shutdown_without_force_fails_clearly_when_acpi_is_ignored(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running", acpi=False)
    record = run(runs, "shutdown", sid, no_force=True, grace=1)
    assert record["state"] == "failed"
    # It fails at the 1 s grace, not at the 15 min deadline (the run above would have timed out), and says
    # why and what to do.
    assert record["error"]["type"] == "AcpiIgnored"
    message = record["error"]["message"]
    assert f"server {sid}" in message and "'off'" in message and "ACPI" in message
    assert "1 s grace" in message and "power-off" in message
    assert posted(control, sid) == ["shutdown"], "no forced power off"


def test_failed_action_fails_the_run_with_names(runs: Runs, control: Control, pool: Iterator[int]) -> None:
    sid = take(pool, control, "running")
    control.send(
        "PATCH", f"/servers/{sid}", {"fail_next": {"command": "create_image", "code": "action_failed"}}
    )
    record = run(runs, "snapshot", sid)
    assert record["state"] == "failed"
    err = record["error"]
    assert (err["type"], err["server_id"], err["step"], err["code"]) == (
        "ActionFailed",
        sid,
        "create_image",
        "action_failed",
    )
    assert err["action_id"]
    # The snapshot stopped a running server: it powers it on again, and the record says so.
    assert posted(control, sid) == ["shutdown", "create_image", "poweron"]
    assert [s["status"] for s in record["steps"]] == ["succeeded", "failed", "pending"]
    assert record["restore"]["state"] == "done"
    assert record["left"] == {"status": "running", "why": "powered on again after the failure"}
    assert Api(control.url.replace("/_fakecloud", "/v1")).server(sid)["status"] == "running"


def test_leave_off_leaves_a_failed_snapshots_server_off(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    control.send(
        "PATCH", f"/servers/{sid}", {"fail_next": {"command": "create_image", "code": "action_failed"}}
    )
    record = run(runs, "snapshot", sid, leave_off=True)
    assert record["state"] == "failed" and record["restore"] is None
    assert posted(control, sid) == ["shutdown", "create_image"], "--leave-off: no power on"
    # It says what it left, as the API has it (it said nothing, an outside test found).
    assert record["left"] == {
        "status": "off",
        "why": "the run failed at create_image; not powered on again (--leave-off) (as the run last saw it)",
    }


def test_a_failed_rebuild_step_says_it_left_the_server_off(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    control.send("PATCH", f"/servers/{sid}", {"fail_next": {"command": "rebuild", "code": "action_failed"}})
    record = run(runs, "rebuild", sid, image="ubuntu-24.04", no_snapshot=True)
    assert record["state"] == "failed" and record["restore"] is None
    assert posted(control, sid) == ["shutdown", "rebuild"], "a failed rebuild is not booted"
    status = Api(control.url.replace("/_fakecloud", "/v1")).server(sid)["status"]
    assert record["left"] == {
        "status": status,
        "why": "the run failed at rebuild; a failed rebuild step is not booted (as the run last saw it)",
    }
    assert status == "off"


def test_a_server_its_own_run_is_stopping_is_busy_and_can_be_queued_behind_that_run(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    """A reviewer: the refusal of a server between running and off came before the busy check, so a server
    that a run was shutting down refused --queue, and said "submit again once it has settled", not busy."""
    sid = take(pool, control, "running")
    api = Api(control.url.replace("/_fakecloud", "/v1"))
    control.send("PUT", "/config", {"durations": {"shutdown": 100.0}})  # 5 s at speed 20
    try:
        first = runs.submit("snapshot", server=sid)
        wait_until(lambda: api.server(sid)["status"] == "stopping", 30, "the first run's shutdown")
        with pytest.raises(ServerBusy) as busy:
            runs.submit("snapshot", server=sid)
        assert busy.value.run_id == first
        queued = runs.submit_full("snapshot", server=sid, queue=True)
    finally:
        control.send("PUT", "/config", {"durations": {"shutdown": 5.0}})
    assert queued["state"] == "queued" and queued["queued_behind"] == first
    # Planned for where the first run leaves the server (running, its snapshot powers it on again).
    assert [s["name"] for s in queued["steps"]] == ["shutdown", "create_image", "power_on"]
    assert runs.wait(first, timeout=60, poll=0.2)["state"] == "succeeded"
    assert runs.wait(queued["run_id"], timeout=60, poll=0.2)["state"] == "succeeded"
    assert posted(control, sid) == ["shutdown", "create_image", "poweron"] * 2


def test_a_failed_rescue_says_the_next_boot_starts_the_rescue_system(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    """An outside test: a rescue that failed at its reset said only "left running", of a server whose next
    boot, whoever makes it, starts the rescue system."""
    from workflows.progress import render_run

    sid = take(pool, control, "running")
    control.send("PATCH", f"/servers/{sid}", {"fail_next": {"command": "reset", "code": "action_failed"}})
    record = run(runs, "rescue", sid)
    assert record["state"] == "failed" and posted(control, sid) == ["enable_rescue", "reset"]
    assert Api(control.url.replace("/_fakecloud", "/v1")).server(sid)["rescue_enabled"] is True
    assert record["left"]["status"] == "running"
    assert record["left"]["also"] == [ACTIONS["enable_rescue"].leaves]
    assert "and rescue mode stays on: the next boot starts the rescue system" in "\n".join(render_run(record))


REFUSALS = [
    ("no-such-workflow", "srv", {}, "unknown workflow"),
    ("power-on", 999999, {}, "no server with id 999999"),
    ("power-on", "nope-server", {}, "no server named"),
    ("rebuild", "srv", {"image": "no-such-image"}, "no system image named"),
    ("rebuild", "srv", {"image": 987654}, "no image with id 987654"),
    ("rebuild", "srv", {}, "needs image"),
    ("rebuild", "protected", {"image": "ubuntu-24.04"}, "protected against rebuild"),
    ("snapshot", "srv", {"grace": "soon"}, "grace must be"),
    ("snapshot", "srv", {"colour": "red"}, "does not take colour"),
    ("snapshot", "srv", {"labels": {"hetzner.cloud/x": "y"}}, "reserved"),
    ("snapshot", "srv", {"image_type": "floppy"}, "image_type must be one of"),
    ("rescue", "srv", {"ssh_keys": ["no-such-key"]}, "no ssh key named"),
    # Each key named is an API read at submit: ten thousand drained a project's budget for an hour.
    ("rescue", "srv", {"ssh_keys": ["ops"] * 10_000}, "at most 50"),
    ("reset-password", "off", {}, "needs a running server"),
    # Booting or stopping by another hand: planned as off, a snapshot imaged a running disk and a rescue
    # booted the installed system, both "succeeded" (an outside test).
    ("snapshot", "starting", {}, "is starting: this run.s steps depend on whether it is running or off"),
    ("rescue", "stopping", {}, "is stopping: this run.s steps depend"),
    ("rebuild", "starting", {"image": "ubuntu-24.04"}, "submit again once it has settled"),
]


@pytest.mark.parametrize(("workflow", "server", "params", "message"), REFUSALS, ids=[r[3] for r in REFUSALS])
def test_refusals_change_nothing(
    runs: Runs,
    control: Control,
    redis_server: RedisServer,
    pool: Iterator[int],
    workflow: str,
    server: Any,
    params: dict[str, Any],
    message: str,
) -> None:
    sid = take(
        pool,
        control,
        server if server in ("off", "starting", "stopping") else "running",
        protection={"rebuild": server == "protected", "delete": False},
    )
    target = sid if server in ("srv", "off", "starting", "stopping", "protected") else server
    runs_before = redis_server.client().zcard("hf:runs")
    posts_before = len(control.posts())
    with pytest.raises(BadInput, match=message):
        runs.submit(workflow, server=target, **params)
    assert len(control.posts()) == posts_before, "no action was started"
    assert redis_server.client().zcard("hf:runs") == runs_before, "no run was recorded"


def test_busy_server_is_refused_with_the_holder_or_queued(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    control.send("PUT", "/config", {"durations": {"create_image": 60.0}})  # 3 s at speed 20
    try:
        first = runs.submit("snapshot", server=sid)
        with pytest.raises(ServerBusy) as info:
            runs.submit("reboot", server=sid)
        assert info.value.run_id == first
        queued = runs.submit_full("power-off", server=sid, queue=True)
        assert queued["state"] == "queued" and queued["queued_behind"] == first
        assert runs.wait(first, timeout=60, poll=0.2)["state"] == "succeeded"
        assert runs.wait(queued["run_id"], timeout=60, poll=0.2)["state"] == "succeeded"
    finally:
        control.send("PUT", "/config", {"durations": {"create_image": 20.0}})
    assert posted(control, sid) == ["shutdown", "create_image", "poweron", "poweroff"]


def test_a_queued_run_is_planned_for_where_the_run_ahead_leaves_the_server(
    runs: Runs, control: Control, api: Api, pool: Iterator[int]
) -> None:
    """Outside tests: queued while a snapshot had the server off, a rebuild was planned without a shutdown and
    ran once the snapshot had started the server again (a safety snapshot of a running server); then, planned
    as off, every such run was refused as it started, and a reset-password needing a running server was
    refused outright. It is planned for where the run ahead leaves the server, and checked as it starts."""
    sid = take(pool, control, "running")
    control.send("PUT", "/config", {"durations": {"create_image": 60.0}})  # 3 s at speed 20
    try:
        first = runs.submit("snapshot", server=sid)
        wait_until(lambda: api.server(sid)["status"] == "off", 30, "the snapshot to stop the server")
        queued = runs.submit_full("reset-password", server=sid, queue=True)
        assert queued["state"] == "queued" and queued["queued_behind"] == first
        assert runs.wait(first, timeout=60, poll=0.2)["state"] == "succeeded"
        assert runs.wait(queued["run_id"], timeout=60, poll=0.2)["state"] == "succeeded"

        # The run ahead fails to power the server on again: the plan made for "running" no longer fits.
        control.send(
            "PATCH", f"/servers/{sid}", {"fail_next": {"command": "poweron", "code": "action_failed"}}
        )
        second = runs.submit("snapshot", server=sid)
        wait_until(lambda: api.server(sid)["status"] == "off", 30, "the second snapshot to stop the server")
        late = runs.submit_full("rebuild", server=sid, image="debian-12", queue=True)
        assert late["steps"][0]["name"] == "shutdown", "planned for the running server the snapshot leaves"
        assert runs.wait(second, timeout=60, poll=0.2)["state"] == "failed"
        ended = runs.wait(late["run_id"], timeout=60, poll=0.2)
    finally:
        control.send("PUT", "/config", {"durations": {"create_image": 20.0}})
    said = (ended.get("error") or {}).get("message", "")
    assert ended["state"] == "failed" and said.startswith("the server is off now and this run was planned"), (
        ended
    )
    assert "as the run ahead of it leaves it (it was off when queued)" in said
    snapshot = ["shutdown", "create_image", "poweron"]
    assert posted(control, sid) == [*snapshot, "reset_password", *snapshot], "the queued rebuild sent nothing"
    assert api.server(sid)["status"] == "off"


def test_cancel_mid_run_waits_out_the_action_and_stops(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    control.send("PUT", "/config", {"durations": {"create_image": 60.0}})
    try:
        run_id = runs.submit("snapshot", server=sid)
        wait_until(lambda: control.posts(sid, "create_image"), 30, "the snapshot to start")
        assert runs.cancel(run_id)["state"] == "cancelling"
        record = runs.wait(run_id, timeout=60, poll=0.2)
    finally:
        control.send("PUT", "/config", {"durations": {"create_image": 20.0}})
    assert record["state"] == "cancelled"
    assert [s["status"] for s in record["steps"]] == ["succeeded", "succeeded", "cancelled"]
    # The running action was waited out, the run stopped, and the server it had shut down is on again.
    assert posted(control, sid) == ["shutdown", "create_image", "poweron"]
    assert record["left"] == {"status": "running", "why": "powered on again after the cancel"}
    with pytest.raises(BadInput, match="already ended"):
        runs.cancel(run_id)


def test_every_workflow_is_covered() -> None:
    from workflows.definitions import WORKFLOWS

    # restore needs an earlier run's snapshot: test_restore_undoes_a_rebuild_from_its_safety_snapshot.
    assert {c[0] for c in CASES} | {"restore"} == set(WORKFLOWS)


def test_a_failed_power_on_is_said_not_retried(runs: Runs, control: Control, pool: Iterator[int]) -> None:
    sid = take(pool, control, "running")
    control.send("PATCH", f"/servers/{sid}", {"fail_next": {"command": "poweron", "code": "unknown_error"}})
    record = run(runs, "snapshot", sid)
    assert record["state"] == "failed" and record["restore"] is None
    assert posted(control, sid) == ["shutdown", "create_image", "poweron"], "one power on, not two"
    assert record["left"]["status"] == "not running" and "power_on failed" in record["left"]["why"]


def test_a_snapshot_larger_than_the_disk_is_refused_before_anything_starts(
    runs: Runs, control: Control, api: Api, pool: Iterator[int]
) -> None:
    servers = [api.server(sid) for sid in api.server_ids()]
    x86 = [s for s in servers if s["server_type"]["architecture"] == "x86"]
    disks = {s["id"]: s["primary_disk_size"] for s in x86}
    big = max(disks, key=lambda s: disks[s])
    small = min(disks, key=lambda s: disks[s])
    assert disks[big] > disks[small], "the seeded fleet mixes server types"
    for sid in (big, small):
        control.send("PATCH", f"/servers/{sid}", {"status": "off", "acpi": True})
    made = run(runs, "snapshot", big)
    assert made["state"] == "succeeded", made
    image_id = next(
        s["outputs"]["image"]["id"] for s in made["steps"] if (s.get("outputs") or {}).get("image")
    )
    posts_before = len(control.posts())
    with pytest.raises(
        BadInput, match=rf"needs a disk of {disks[big]:g} GB; server .* has {disks[small]:g} GB"
    ):
        runs.submit("rebuild", server=small, image=str(image_id), no_snapshot=True)
    assert len(control.posts()) == posts_before, "the small server was not even switched off"


def test_a_failed_password_reset_says_to_check_the_guest_agent(
    runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    control.send(
        "PATCH", f"/servers/{sid}", {"fail_next": {"command": "reset_password", "code": "action_failed"}}
    )
    record = run(runs, "reset-password", sid)
    assert record["state"] == "failed"
    assert "QEMU guest agent" in record["error"]["message"], record["error"]


def test_restore_undoes_a_rebuild_from_its_safety_snapshot(
    runs: Runs, control: Control, api: Api, pool: Iterator[int]
) -> None:
    sid = take(pool, control, "running")
    image_before = api.server(sid)["image"]["id"]
    rebuilt = run(runs, "rebuild", sid, image="debian-12")
    assert rebuilt["state"] == "succeeded" and api.server(sid)["image"]["name"] == "debian-12"
    safety = next(s["outputs"]["image"]["id"] for s in rebuilt["steps"] if s["name"] == "safety_snapshot")
    assert safety != image_before
    before = len(posted(control, sid))
    with pytest.raises(BadInput, match="not 1;"):
        runs.submit("restore", server=1 if sid != 1 else 2, from_run=rebuilt["id"])
    with pytest.raises(BadInput, match="no run 'nosuch'"):
        runs.submit("restore", from_run="nosuch")
    undo = run(runs, "restore", None, from_run=rebuilt["id"])  # the server comes from the run
    assert undo["state"] == "succeeded", undo.get("error")
    assert undo["server_id"] == sid and undo["params"]["image"] == safety
    assert posted(control, sid)[before:] == ["shutdown", "rebuild"], "no new snapshot, no second rebuild"
    assert api.server(sid)["image"]["id"] == safety and api.server(sid)["status"] == "running"
    snapshot_run = run(runs, "snapshot", sid)
    with pytest.raises(BadInput, match="made no snapshot"):
        runs.submit("restore", from_run=run(runs, "reboot", sid)["id"])
    assert run(runs, "restore", sid, from_run=snapshot_run["id"])["state"] == "succeeded"


def test_user_data_is_kept_nowhere_in_redis_once_the_run_ended(
    runs: Runs, control: Control, pool: Iterator[int], redis_server: RedisServer
) -> None:
    """An outside test found a rebuild's cloud-init text in the submit task's and the step's results, kept a
    day, while the run record showed only its fingerprint."""
    marker = "password: UD-MARKER-5f1e"
    sid = take(pool, control)
    record = run(
        runs, "rebuild", sid, image="ubuntu-24.04", no_snapshot=True, user_data=f"#cloud-config\n{marker}\n"
    )
    assert record["state"] == "succeeded", record.get("error")
    assert record["params"]["user_data"].startswith("sha256:")
    assert not [b for b in redis_blobs(redis_server.client()) if marker.encode() in b]
    results = [k for k in redis_server.client().scan_iter("celery-task-meta-*") if record["id"].encode() in k]
    assert results, "the step's result is kept (result_extended), with the fingerprint in its kwargs"

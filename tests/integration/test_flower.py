"""Submitting over HTTP through a real Flower process, exactly as the README's curl example does."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from workers.run_store import RunStore
from workflows.api import Runs

from ..conftest import start_cloud
from ..support.audit import leaks
from ..support.cloud import TOKEN, Api, Control
from ..support.processes import Flower, RedisServer, Worker, wait_until, worker_env

pytestmark = pytest.mark.integration
AUTH = ("ops", "flower-test-pw")


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=6, speed=20.0, seed=31)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    w = Worker("flower", worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20"), logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, logdir: Path) -> Iterator[Flower]:
    f = Flower(redis_server.url, logdir, AUTH)
    yield f
    f.stop()


def test_curl_path_submits_a_run(
    worker: Worker, flower: Flower, cloud: Any, redis_server: RedisServer
) -> None:
    api, control = Api(cloud.base_url), Control(cloud.control_url)
    server = api.get("/servers")["servers"][0]
    control.send("PATCH", f"/servers/{server['id']}", {"status": "running", "acpi": True})
    body = {
        "kwargs": {"workflow": "snapshot", "server": server["name"], "params": {"description": "via flower"}}
    }
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-u",
            ":".join(AUTH),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
            f"{flower.url}/api/task/send-task/hcloud_flow.submit",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    task_id = json.loads(done.stdout)["task-id"]
    answer = flower.result(task_id)
    assert answer["state"] == "SUCCESS", answer
    run_id = answer["result"]["run_id"]
    record = Runs(None, RunStore(redis_server.client())).wait(run_id, timeout=60, poll=0.2)  # type: ignore[arg-type]
    assert record["state"] == "succeeded"
    assert [p["route"].rsplit("/", 1)[-1] for p in control.posts(server["id"])] == [
        "shutdown",
        "create_image",
        "poweron",
    ]


def test_flower_refuses_without_credentials_and_reports_bad_input(worker: Worker, flower: Flower) -> None:
    denied = requests.post(
        f"{flower.url}/api/task/send-task/hcloud_flow.submit", json={"kwargs": {}}, timeout=10
    )
    assert denied.status_code == 401
    sent = flower.send("hcloud_flow.submit", {"kwargs": {"workflow": "snapshot", "server": "no-such-server"}})
    answer = flower.result(sent.json()["task-id"])
    assert answer["state"] == "FAILURE"
    assert "no server named" in str(answer["result"])


def test_flower_task_views_hold_no_secret(
    worker: Worker, flower: Flower, cloud: Any, redis_server: RedisServer
) -> None:
    api, control = Api(cloud.base_url), Control(cloud.control_url)
    server = api.get("/servers")["servers"][1]
    control.send("PATCH", f"/servers/{server['id']}", {"status": "running"})
    sent = flower.send(
        "hcloud_flow.submit", {"kwargs": {"workflow": "reset-password", "server": server["id"]}}
    )
    run_id = flower.result(sent.json()["task-id"])["result"]["run_id"]
    wait_until(lambda: control.posts(server["id"], "reset_password"), 30, "the password reset")
    views = [requests.get(f"{flower.url}/api/tasks", auth=AUTH, timeout=10).text]

    def seen_all() -> bool:
        tasks = requests.get(f"{flower.url}/api/tasks", auth=AUTH, timeout=10).json()
        # A parked step never sends a task-succeeded event (the monitor finishes it): STARTED is its last.
        return any(t.get("name") == "hcloud_flow.reset_password" for t in tasks.values())

    wait_until(seen_all, 30, "Flower to see the reset_password task")
    Runs(None, RunStore(redis_server.client())).wait(run_id, timeout=60, poll=0.2)  # type: ignore[arg-type]
    tasks = requests.get(f"{flower.url}/api/tasks", auth=AUTH, timeout=10).json()
    views.append(json.dumps(tasks))
    views += [requests.get(f"{flower.url}/api/task/info/{tid}", auth=AUTH, timeout=10).text for tid in tasks]
    secrets = {TOKEN.encode()} | {p.encode() for p in control.get("/secrets")["root_passwords"]}
    assert run_id and len(secrets) > 1
    assert not leaks(secrets, {"flower": [v.encode() for v in views]})


def test_flower_shows_a_rebuilds_user_data_only_as_its_fingerprint(
    worker: Worker, flower: Flower, cloud: Any, redis_server: RedisServer
) -> None:
    """Task events carry each message's argument reprs, and Flower shows them: the cloud-init text stood on
    its task pages, in the submit task's and the rebuild step's (an outside test)."""
    from workers.user_data import fingerprint

    api, control = Api(cloud.base_url), Control(cloud.control_url)
    server = api.get("/servers")["servers"][2]
    control.send("PATCH", f"/servers/{server['id']}", {"status": "running", "acpi": True})
    user_data = "#cloud-config\npassword: FLOWER-UD-SECRET-42\n"
    params = {"image": "ubuntu-24.04", "no_snapshot": True, "user_data": user_data}
    sent = flower.send(
        "hcloud_flow.submit", {"kwargs": {"workflow": "rebuild", "server": server["id"], "params": params}}
    )
    run_id = flower.result(sent.json()["task-id"])["result"]["run_id"]
    Runs(None, RunStore(redis_server.client())).wait(run_id, timeout=60, poll=0.2)  # type: ignore[arg-type]

    def tasks() -> dict[str, Any]:
        return dict(requests.get(f"{flower.url}/api/tasks", auth=AUTH, timeout=10).json())

    wait_until(
        lambda: any(t.get("name") == "hcloud_flow.rebuild" for t in tasks().values()), 30, "the rebuild step"
    )
    seen = tasks()
    views = [json.dumps(seen)]
    views += [requests.get(f"{flower.url}/api/task/info/{tid}", auth=AUTH, timeout=10).text for tid in seen]
    assert not any("FLOWER-UD-SECRET-42" in v for v in views)
    rebuild = next(t for t in seen.values() if t.get("name") == "hcloud_flow.rebuild")
    assert fingerprint(user_data) in rebuild["kwargs"], rebuild["kwargs"]
    assert control.posts(server["id"], "rebuild"), "the step still posted with the text it was sent"

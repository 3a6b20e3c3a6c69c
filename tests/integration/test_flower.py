"""Submitting over HTTP through a real Flower process, exactly as the README's curl example does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from workers.run_store import RunStore
from workflows.api import Runs

from ..conftest import start_cloud
from ..support import ROOT, Api, Control, RedisServer, Worker, free_port, wait_until, worker_env

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
def flower(redis_server: RedisServer, logdir: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
    env.update(HCLOUD_FLOW_REDIS_URL=redis_server.url, FLOWER_BASIC_AUTH=":".join(AUTH), PYTHONPATH=str(ROOT))
    log = open(logdir / "flower.log", "wb")  # noqa: SIM115 - closed after the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "--broker",
            redis_server.url,
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(url + "/healthcheck", timeout=1).text == "OK"
        except requests.ConnectionError:
            return False

    wait_until(healthy, 30, "flower to answer")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def result_of(flower: str, task_id: str) -> dict[str, Any]:
    """Poll Flower's result endpoint until the task has ended, as a client script would."""

    def ended() -> dict[str, Any] | None:
        got = requests.get(f"{flower}/api/task/result/{task_id}", auth=AUTH, timeout=10).json()
        return got if got["state"] in ("SUCCESS", "FAILURE") else None

    return dict(wait_until(ended, 30, f"task {task_id} to end", interval=0.2))


def test_curl_path_submits_a_run(worker: Worker, flower: str, cloud: Any, redis_server: RedisServer) -> None:
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
            f"{flower}/api/task/send-task/hcloud_flow.submit",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    task_id = json.loads(done.stdout)["task-id"]
    answer = result_of(flower, task_id)
    assert answer["state"] == "SUCCESS", answer
    run_id = answer["result"]["run_id"]
    record = Runs(None, RunStore(redis_server.client())).wait(run_id, timeout=60, poll=0.2)  # type: ignore[arg-type]
    assert record["state"] == "succeeded"
    assert [p["route"].rsplit("/", 1)[-1] for p in control.posts(server["id"])] == [
        "shutdown",
        "create_image",
        "poweron",
    ]


def test_flower_refuses_without_credentials_and_reports_bad_input(worker: Worker, flower: str) -> None:
    denied = requests.post(f"{flower}/api/task/send-task/hcloud_flow.submit", json={"kwargs": {}}, timeout=10)
    assert denied.status_code == 401
    sent = requests.post(
        f"{flower}/api/task/send-task/hcloud_flow.submit",
        auth=AUTH,
        timeout=10,
        json={"kwargs": {"workflow": "snapshot", "server": "no-such-server"}},
    ).json()
    answer = result_of(flower, sent["task-id"])
    assert answer["state"] == "FAILURE"
    assert "no server named" in str(answer["result"])

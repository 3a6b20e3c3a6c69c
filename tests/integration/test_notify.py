"""Webhooks as a receiver sees them: real workers post each event to a real HTTP server of the test's own,
signed, retried when refused, and never carrying a secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workers.errors import BadInput
from workers.run_store import RunStore
from workflows.api import Jobs, Runs
from workflows.fleet import JobStore
from workflows.notify import target_of

from ..conftest import start_cloud
from ..support.cloud import TOKEN, Api, Control
from ..support.processes import RedisServer, Worker, client_app, wait_until, worker_env

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-7d1e"


class Receiver:
    """An HTTP server that records every request and answers 500 to the first ``fail[path]`` ones."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.seen.append({"path": self.path, "headers": dict(self.headers), "raw": raw})
                failing = receiver.fail.get(self.path, 0)
                if failing:
                    receiver.fail[self.path] = failing - 1
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r["raw"]) for r in self.seen if r["path"] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=10, speed=20.0, seed=81)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, receiver: Receiver, logdir: Path) -> Iterator[Worker]:
    env = worker_env(
        redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_WEBHOOK_SECRET=SECRET,
        HCLOUD_FLOW_NOTIFY_URLS=f"{receiver.url}/global",
    )  # fmt: skip
    w = Worker("notify", env, logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def app(redis_server: RedisServer) -> Iterator[Celery]:
    a = client_app(redis_server.url)
    yield a
    a.close()


@pytest.fixture(scope="module")
def runs(worker: Worker, app: Celery, redis_server: RedisServer) -> Runs:
    return Runs(app, RunStore(redis_server.client()))


@pytest.fixture(scope="module")
def names(cloud: Any) -> list[str]:
    control = Control(cloud.control_url)
    servers = Api(cloud.base_url).get("/servers", per_page=50)["servers"]
    for s in servers:
        control.send("PATCH", f"/servers/{s['id']}", {"status": "running", "acpi": True})
    return [s["name"] for s in servers]


def of_run(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("run", {}).get("id") == run_id]


def test_a_run_tells_its_own_and_the_global_webhooks_signed(
    runs: Runs, receiver: Receiver, names: list[str], cloud: Any
) -> None:
    run_id = runs.submit("reset-password", server=names[0], notify=[f"{receiver.url}/mine"])
    runs.wait(run_id, timeout=60, poll=0.2)
    for path in ("/mine", "/global"):
        wait_until(
            lambda path=path: (
                len([e for e in receiver.events(path) if e.get("run", {}).get("id") == run_id]) == 2
            ),
            30,
            path,
        )
    mine = [e for e in receiver.events("/mine") if e["run"]["id"] == run_id]
    assert [e["event"] for e in mine] == ["run.started", "run.ended"]
    assert mine[1]["run"]["state"] == "succeeded" and mine[1]["run"]["server_name"] == names[0]
    for request in (r for r in receiver.seen if r["path"] == "/mine"):
        expected = "sha256=" + hmac.new(SECRET.encode(), request["raw"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Hcloud-Flow-Signature"] == expected
        assert request["headers"]["X-Hcloud-Flow-Event"] in ("run.started", "run.ended")
    passwords = {p for p in cloud.backend.root_passwords}
    everything = b"".join(r["raw"] for r in receiver.seen)
    assert passwords and not any(p.encode() in everything for p in passwords), "no root password in a webhook"
    assert TOKEN.encode() not in everything and SECRET.encode() not in everything


def test_slack_gets_text(runs: Runs, receiver: Receiver, names: list[str]) -> None:
    run_id = runs.submit("reboot", server=names[1], notify=[f"slack+{receiver.url}/slack"])
    runs.wait(run_id, timeout=60, poll=0.2)
    wait_until(lambda: len(receiver.events("/slack")) >= 2, 30, "two Slack messages")
    texts = [e["text"] for e in receiver.events("/slack")]
    assert any(run_id in t and "succeeded" in t for t in texts), texts


def test_a_refused_delivery_is_tried_again_and_logged(
    runs: Runs, receiver: Receiver, names: list[str], redis_server: RedisServer
) -> None:
    receiver.fail["/flaky"] = 4  # both events' first tries, and one more each
    run_id = runs.submit("power-off", server=names[2], notify=[f"{receiver.url}/flaky"])
    runs.wait(run_id, timeout=60, poll=0.2)
    wait_until(lambda: len([r for r in receiver.seen if r["path"] == "/flaky"]) >= 6, 40, "the retries")
    delivered = receiver.events("/flaky")
    ids = {e["id"] for e in delivered}
    assert len(ids) == 2, "two events, each delivered once it was taken"
    client = redis_server.client()

    flaky = target_of(f"{receiver.url}/flaky")

    def logs() -> list[list[dict[str, Any]]]:
        entries = ([json.loads(x) for x in client.lrange(f"hf:notify:{i}", 0, -1)] for i in ids)
        return [[a for a in log if a["target"] == flaky] for log in entries]

    wait_until(lambda: all(log and log[-1]["delivered"] for log in logs()), 20, "the delivery log")
    for log in logs():
        assert [a["attempt"] for a in log] == list(range(1, len(log) + 1)), log
        assert any(a["status"] == 500 for a in log) and log[-1]["status"] == 204


def test_a_fleet_job_tells_its_start_and_end_with_failed_servers(
    worker: Worker, app: Celery, redis_server: RedisServer, receiver: Receiver, names: list[str], cloud: Any
) -> None:
    jobs = Jobs(app, JobStore(redis_server.client()))
    failing = Api(cloud.base_url).get("/servers", name=names[4])["servers"][0]["id"]
    Control(cloud.control_url).send("PATCH", f"/servers/{failing}", {"fail_next": {"command": "reboot"}})
    job = jobs.start(
        "reboot", servers=names[3:6], max_concurrency="1", max_errors="5", notify=[f"{receiver.url}/job"]
    )
    jobs.wait(job["id"], timeout=60, poll=0.3)
    wait_until(lambda: len(receiver.events("/job")) >= 2, 30, "job events")
    events = receiver.events("/job")
    assert [e["event"] for e in events] == ["job.started", "job.ended"]
    ended = events[1]["job"]
    assert ended["id"] == job["id"] and ended["state"] == "completed_with_failures"
    assert len(ended["failed"]) == 1 and ended["failed"][0]["outcome"] == "failed"
    assert not [e for e in receiver.events("/job") if e["event"].startswith("run.")], (
        "a job's runs stay quiet"
    )


@pytest.mark.parametrize(
    ("urls", "says"),
    [
        (["ftp://example.org/x"], "http(s)"),
        (["http://user:pw@example.org/x"], "credentials"),
        (["http://"], "http(s)"),
        ("http://example.org", "list"),
        ([f"http://example.org/{i}" for i in range(11)], "at most 10"),
        (["http://example.org/" + "x" * 3000], "2048"),
    ],
)
def test_bad_webhook_urls_are_refused_and_nothing_runs(
    runs: Runs, names: list[str], redis_server: RedisServer, urls: Any, says: str
) -> None:
    before = redis_server.client().zcard("hf:runs")
    with pytest.raises(BadInput, match=says.replace("(", r"\(").replace(")", r"\)")):
        runs.submit("reboot", server=names[6], notify=urls)
    assert redis_server.client().zcard("hf:runs") == before

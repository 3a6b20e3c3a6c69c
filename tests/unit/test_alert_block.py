"""Alert blocks: what answer blocks (a pure rule), and a fleet job that waits while one does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.errors import BadInput
from workflows.fleet import FleetRunner, JobStore
from workflows.gates import TOO_BIG, blocking_reason, first_block
from workflows.specs import FleetSpec, checked

from ..support.processes import RedisServer

FIRING = {"labels": {"alertname": "HighLoad"}, "status": {"state": "active"}}


@pytest.mark.parametrize(
    ("status", "body", "blocks"),
    [
        (200, "[]", None),  # Alertmanager v2, nothing firing
        (200, json.dumps([FIRING, FIRING]), "2 alerts firing (HighLoad)"),
        (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}), None),
        (
            200,
            json.dumps({"status": "success", "data": {"result": [{"metric": {"alertname": "DiskFull"}}]}}),
            "1 alert firing (DiskFull)",
        ),
        (200, json.dumps({"status": "success", "data": [FIRING]}), "1 alert firing (HighLoad)"),
        (200, json.dumps({"status": "success", "data": {"alerts": [FIRING]}}), "1 alert firing (HighLoad)"),
        (200, json.dumps({"status": "success", "data": {"alerts": []}}), None),  # Prometheus /api/v1/alerts
        (  # an outside test: a pending alert was called firing
            200,
            json.dumps({"data": {"alerts": [{"labels": {"alertname": "Soon"}, "state": "pending"}]}}),
            "1 alert listed, some still pending (Soon)",
        ),
        # What cannot be read as a list of alerts is not an all-clear.
        (200, "<html>log in</html>", "answer is not a list of alerts (HTTP 200, 19 bytes)"),
        (200, json.dumps({"healthy": True}), "answer is not a list of alerts (HTTP 200, 17 bytes)"),
        (204, "", "answer is not a list of alerts (HTTP 204, 0 bytes)"),
        (200, TOO_BIG, "answer over 1 MiB: not read"),
        (503, "[]", "answered HTTP 503"),
        (302, "", "answered HTTP 302"),  # a redirect (to a login page, say) is not an all-clear
        (None, "ConnectTimeout", "no answer (ConnectTimeout)"),
    ],
)
def test_what_blocks(status: int | None, body: str, blocks: str | None) -> None:
    assert blocking_reason(status, body) == blocks


def test_the_first_blocking_url_is_named_by_its_host_alone() -> None:
    answers = {"http://am:9093/api/v2/alerts": (200, "[]"), "http://prom:9090/q?token=s3cret": (500, "")}
    reason = first_block(list(answers), answers.__getitem__)
    assert reason == "blocked by prom:9090: answered HTTP 500" and "s3cret" not in reason


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://am/api", "must be a list"),
        (["ftp://am/api"], r"not an http\(s\) URL"),
        (["slack+https://hooks/x"], r"not an http\(s\) URL"),
        (["http://user:pw@am/api"], "credentials"),
    ],
)
def test_block_urls_are_checked_before_anything_starts(value: Any, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        checked(FleetSpec, {"workflow": "reboot", "servers": [1], "block_on": value})


def test_a_blocked_job_starts_nothing_says_why_and_goes_on_when_it_clears(redis_server: RedisServer) -> None:
    now = [1000.0]
    store = JobStore(redis_server.client(), prefix="ab1", clock=lambda: now[0])
    answer = [(200, json.dumps([FIRING]))]
    kicks: list[float] = []
    started: list[int] = []

    def submit(**kw: Any) -> dict[str, Any]:
        started.append(kw["server"])
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(
        store, None, submit, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda job_id, delay: kicks.append(delay), fresh_for=0, probe=lambda url: answer[0], recheck=7.0,
    )  # fmt: skip
    store.create(
        {
            "id": "j1", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}"} for i in (1, 2, 3)], "max_concurrency": 2,
            "max_errors": 0, "canary": 0, "limits": {}, "window": None, "block_on": ["http://am/alerts"],
        }
    )  # fmt: skip
    runner.advance("j1")
    job = store.get("j1")
    assert job is not None and job["state"] == "running" and started == [] and kicks == [7.0]
    assert job["blocked"] == {"reason": "blocked by am: 1 alert firing (HighLoad)", "since": 1000.0}
    now[0] = 1007.0
    runner.advance("j1")  # still firing: the first "since" stays
    assert store.get("j1")["blocked"]["since"] == 1000.0 and started == []  # type: ignore[index]
    answer[0] = (200, "[]")
    runner.advance("j1")
    assert started == [1, 2] and store.get("j1")["blocked"] is None  # type: ignore[index]
    answer[0] = (None, "ConnectionError")  # the alert source went away: block again before server 3
    runner.on_run_ended({"id": "run-1", "job_id": "j1", "server_id": 1, "state": "succeeded"})
    assert started == [1, 2], "no answer is not an all-clear"
    assert "no answer" in store.get("j1")["blocked"]["reason"]  # type: ignore[index]


def test_block_on_urls_are_looked_at_together_and_the_first_listed_block_is_named() -> None:
    """An outside test: seven URLs answering in 4.5 s each, looked at one after the other, held the job's
    lock past its 30 s and the submit for as long."""
    import threading
    import time

    lock = threading.Lock()
    active = peak = 0

    def probe(url: str) -> tuple[int | None, str]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return (200, "[]") if "ok" in url else (503, "")

    urls = [f"http://ok{i}.example/alerts" for i in range(5)] + [
        "http://down.example/a",
        "http://ok9.example/",
    ]
    assert first_block(urls, probe) == "blocked by down.example: answered HTTP 503"
    assert peak > 1, "looked at together"
    assert first_block([], probe) is None

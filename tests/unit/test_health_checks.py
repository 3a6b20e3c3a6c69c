"""Health checks: the template rule, the verdict after each look (pure), and a job that waits for them."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import BadInput
from workflows.fleet import FleetRunner, JobStore
from workflows.gates import check_template, health_url, health_verdict, looks_needed
from workflows.specs import FleetSpec, checked

from ..support.processes import RedisServer


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "at most 2048"),
        ("http://{ipv4}:8080/{token}", r"not \{token\}"),
        ("http://{ipv4:>10}/x", "without :spec"),
        ("http://{name!r}/x", "without :spec"),
        ("http://127.0.0.1:{id}/", "port out of 1-65535"),  # ids are far above 65535
        ("tcp://127.0.0.1:99999", "port out of 1-65535"),
        ("tcp://{ipv4}:0", "port out of 1-65535"),  # an outside test: 0 came back as 0, no error
        ("http://{ipv4}/h?token=abc", "credential in a parameter"),
        ("ftp://{ipv4}/", "must look like"),
        ("tcp://{ipv4}", "needs a port"),
        ("http://{ipv4}:8080/healthz{", "not a valid template"),
        ("http://u:p@{ipv4}/", "credentials"),
        ("tcp://{ipv4}:22", None),
        ("https://{name}.internal/healthz?id={id}", None),
    ],
)
def test_templates(template: str, message: str | None) -> None:
    if message is None:
        assert check_template(template) == template
    else:
        with pytest.raises(BadInput, match=message):
            check_template(template)


def test_the_url_is_filled_in_per_server() -> None:
    server = {"id": 7, "name": "web-1", "ipv4": "203.0.113.7"}
    assert (
        health_url("http://{ipv4}:8080/h?n={name}&i={id}", server) == "http://203.0.113.7:8080/h?n=web-1&i=7"
    )


def test_settle_timeout_and_flapping() -> None:
    check: dict[str, Any] = {"state": "checking", "since": 100.0, "deadline": 160.0, "next": 100.0}

    def look(check: dict[str, Any], healthy: bool, at: float, settle: float = 4) -> dict[str, Any]:
        return health_verdict(check, healthy, "HTTP 200" if healthy else "HTTP 503", at, settle)

    assert looks_needed(4) == 3 and looks_needed(0) == 1 and looks_needed(30) == 16
    up = look(check, True, 100.0)
    assert (up["state"], up["healthy_since"], up["streak"]) == ("checking", 100.0, 1)
    down = look(up, False, 102.0)
    assert (down["healthy_since"], down["streak"], down["last"]) == (None, 0, "HTTP 503")
    b = look(look(down, True, 104.0), True, 106.0)
    assert b["state"] == "checking", "the 4 s settle restarted at the break"
    assert look(b, True, 108.0)["state"] == "healthy"
    # Looks 7 s apart (a slow probe held the round): time alone would pass it on two looks; the streak not.
    slow = look(look(check, True, 100.0), True, 107.0)
    assert slow["state"] == "checking" and look(slow, True, 114.0)["state"] == "healthy"
    assert look(down, False, 160.0)["state"] == "unhealthy"
    assert look(check, True, 100.0, settle=0)["state"] == "healthy"


def test_health_options_are_checked_before_anything_starts() -> None:
    base = {"workflow": "reboot", "servers": [1], "health_check": "http://{ipv4}/"}
    assert checked(FleetSpec, {**base, "health_timeout": "2m", "health_settle": "20s"}).health_timeout == 120
    with pytest.raises(BadInput, match="shorter than health_timeout"):
        checked(FleetSpec, {**base, "health_timeout": "30s", "health_settle": "30s"})
    with pytest.raises(BadInput, match="from 10s to 1d"):
        checked(FleetSpec, {**base, "health_timeout": "5s"})


def test_a_server_counts_only_once_healthy_and_an_unhealthy_one_is_an_error(
    redis_server: RedisServer,
) -> None:
    now = [1000.0]
    store = JobStore(redis_server.client(), prefix="hc1", clock=lambda: now[0])
    healthy = {1: [True, True, True], 2: [False] * 100, 3: [True]}
    looked: list[str] = []

    def look(url: str) -> tuple[bool, str]:
        looked.append(url)
        sid = int(url.rsplit("/", 1)[1])
        ok = healthy[sid].pop(0) if len(healthy[sid]) > 1 else healthy[sid][0]
        return ok, "HTTP 200" if ok else "HTTP 503"

    kicks: list[float] = []
    runner = FleetRunner(
        store, None, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda job_id, delay: kicks.append(delay), fresh_for=0, look=look,
    )  # fmt: skip
    store.create(
        {
            "id": "j1", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}", "ipv4": f"10.0.0.{i}"} for i in (1, 2, 3)],
            "max_concurrency": 2, "max_errors": 0, "canary": 0, "limits": {}, "window": None,
            "health": {"check": "http://{ipv4}/h/{id}", "timeout": 60, "settle": 4},
        }
    )  # fmt: skip
    runner.advance("j1")
    for sid in (1, 2):
        runner.on_run_ended({"id": f"run-{sid}", "job_id": "j1", "server_id": sid, "state": "succeeded"})
    job = store.get("j1")
    assert job is not None and {s: e["outcome"] for s, e in job["outcomes"].items()} == {
        1: "running",
        2: "running",
    }
    assert 3 not in job["outcomes"], "a server under its health check still takes a place in the window"
    runner.advance("j1")  # the kick: first looks
    assert sorted(looked) == ["http://10.0.0.1/h/1", "http://10.0.0.2/h/2"]
    now[0] = 1003.0
    runner.advance("j1")  # healthy for 3 s, two looks: not settled yet
    assert store.get("j1")["outcomes"][1]["outcome"] == "running"  # type: ignore[index]
    now[0] = 1005.0
    runner.advance("j1")  # a third look, 5 s: settled
    job = store.get("j1")
    assert job is not None and job["outcomes"][1]["outcome"] == "succeeded"
    assert job["outcomes"][2]["outcome"] == "running" and job["outcomes"][2]["health"]["last"] == "HTTP 503"
    assert job["outcomes"][3]["outcome"] == "running", "server 1's place went to server 3"
    now[0] = 1061.0
    runner.advance("j1")
    job = store.get("j1")
    assert job is not None and job["outcomes"][2]["outcome"] == "failed"
    assert job["outcomes"][2]["reason"] == "health check not passed within 60 s (last: HTTP 503)"
    assert kicks and min(kicks) >= 0.0

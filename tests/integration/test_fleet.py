"""Fleet jobs end to end: the window, canary, error threshold, busy servers, cancel, pause and resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workers.errors import BadInput
from workers.run_store import RunStore
from workflows.api import Jobs, Runs, default_submitter
from workflows.fleet import JobStore

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=95, speed=20.0, seed=41, durations={"reset": 40.0})  # a reset takes 2 s
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    env = worker_env(
        redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_BLOCK_RECHECK="1"
    )
    w = Worker("fleet", env, logdir, concurrency=8)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def jobs(worker: Worker, celery_client: Celery, redis_server: RedisServer) -> Jobs:
    return Jobs(celery_client, JobStore(redis_server.client()))


@pytest.fixture(scope="module")
def runs(worker: Worker, celery_client: Celery, redis_server: RedisServer) -> Runs:
    return Runs(celery_client, RunStore(redis_server.client()))


@pytest.fixture(scope="module")
def control(cloud: Any) -> Control:
    return Control(cloud.control_url)


@pytest.fixture(scope="module")
def pool(cloud: Any, control: Control) -> Iterator[int]:
    ids = Api(cloud.base_url).server_ids()
    for sid in ids:
        control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    return iter(ids)


def take(pool: Iterator[int], n: int) -> list[int]:
    return [next(pool) for _ in range(n)]


def in_flight_peak(control: Control, ids: list[int]) -> int:
    """Return the most servers that had an action running at one moment, from fakecloud's own records."""
    actions = [a for a in control.get("/actions")["actions"] if a["server_id"] in ids]
    spans: dict[int, list[float]] = {}
    for a in actions:
        lo, hi = spans.get(a["server_id"], [a["started_at"], a["finished_at"]])
        spans[a["server_id"]] = [min(lo, a["started_at"]), max(hi, a["finished_at"])]
    events = sorted([(lo, 1) for lo, _ in spans.values()] + [(hi, -1) for _, hi in spans.values()])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_thirty_servers_never_more_than_five_in_flight(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 30)
    job = jobs.start("reset", servers=ids, max_concurrency="5", max_errors="0")
    done = jobs.wait(job["id"], timeout=120, poll=0.3)
    assert done["state"] == "succeeded", done
    assert done["counts"].get("succeeded") == 30
    peak = in_flight_peak(control, ids)
    assert 2 <= peak <= 5, f"peak {peak} servers in flight"
    assert all(len(control.posts(sid, "reset")) == 1 for sid in ids)


def test_percent_window_and_selector(jobs: Jobs, cloud: Any) -> None:
    selector = "env=staging,role in (web,api)"
    expected = {
        s["id"] for s in Api(cloud.base_url).get("/servers", label_selector=selector, per_page=50)["servers"]
    }
    assert expected, "the seeded fleet has staging web/api servers"
    plan = jobs.plan("reboot", selector=selector, max_concurrency="50%", max_errors="10%")
    assert {s["id"] for s in plan["servers"]} == expected
    assert plan["max_concurrency"] == max(1, len(expected) // 2)
    assert all(s["steps"] == ["reboot"] for s in plan["servers"])
    assert plan["api_requests"] > 0 and plan["estimated_seconds"] > 0


def test_dry_run_starts_nothing(jobs: Jobs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 3)
    before = len(control.posts())
    plan = jobs.plan("snapshot", servers=ids, max_concurrency="2", max_errors="0", canary=1)
    assert [s["steps"] for s in plan["servers"]] == [["shutdown", "create_image", "power_on"]] * 3
    assert plan["waves"] == 2
    assert len(control.posts()) == before


def test_a_server_booting_by_another_hand_is_refused_alone(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    """An outside test: a server that was starting was planned as off, its snapshot skipping the shutdown."""
    ids = take(pool, 3)
    control.send("PATCH", f"/servers/{ids[1]}", {"status": "starting"})
    plan = jobs.plan("snapshot", servers=ids, max_concurrency="3", max_errors="1")
    rows = {s["id"]: s for s in plan["servers"]}
    assert rows[ids[1]]["steps"] == [] and "is starting" in rows[ids[1]]["refused"]
    assert rows[ids[0]]["steps"] == ["shutdown", "create_image", "power_on"], "the others are planned"
    others = jobs.plan("snapshot", servers=[ids[0], ids[2]], max_concurrency="3", max_errors="1")
    assert plan["api_requests"] == others["api_requests"], "a refused server spends nothing (a reviewer)"
    job = jobs.start("snapshot", servers=ids, max_concurrency="3", max_errors="1")
    done = jobs.wait(job["id"], timeout=90, poll=0.3)
    refused = done["outcomes"][ids[1]]
    assert refused["outcome"] == "refused" and "submit again once it has settled" in refused["reason"]
    assert control.posts(ids[1]) == [], "nothing was done to it"
    assert all(done["outcomes"][sid]["outcome"] == "succeeded" for sid in (ids[0], ids[2]))


def test_canary_failure_stops_the_job_before_the_rest(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 8)
    control.send("PATCH", f"/servers/{ids[1]}", {"fail_next": {"command": "reset", "code": "action_failed"}})
    job = jobs.start("reset", servers=ids, max_concurrency="4", max_errors="5", canary=2)
    done = jobs.wait(job["id"], timeout=60, poll=0.3)
    assert (done["state"], done["reason"]) == ("failed", "a canary failed")
    assert [sid for sid in ids if control.posts(sid)] == ids[:2], "nothing but the canaries started"
    assert all(done["outcomes"][sid]["outcome"] == "not_started" for sid in ids[2:])


def test_error_threshold_stops_new_starts(jobs: Jobs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 6)
    for sid in ids[:2]:
        control.send("PATCH", f"/servers/{sid}", {"fail_next": {"command": "reset", "code": "unknown_error"}})
    job = jobs.start("reset", servers=ids, max_concurrency="1", max_errors="1")
    done = jobs.wait(job["id"], timeout=60, poll=0.3)
    assert done["state"] == "failed" and "exceed --max-errors 1" in done["reason"]
    assert [sid for sid in ids if control.posts(sid)] == ids[:2]
    assert done["counts"]["failed"] == 2 and done["counts"]["not_started"] == 4


def test_busy_servers_are_skipped_not_double_booked(
    jobs: Jobs, runs: Runs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 4)
    holder = runs.submit("snapshot", server=ids[2])
    job = jobs.start("reset", servers=ids, max_concurrency="4", max_errors="0")
    done = jobs.wait(job["id"], timeout=60, poll=0.3)
    assert done["state"] == "completed_with_failures", "a skipped server is not a success"
    skipped = done["outcomes"][ids[2]]
    assert skipped["outcome"] == "skipped" and skipped["busy_with"] == holder
    assert runs.wait(holder, timeout=60, poll=0.3)["state"] == "succeeded"
    assert "reset" not in [p["route"].rsplit("/", 1)[-1] for p in control.posts(ids[2])]


def test_pause_resume_and_cancel(jobs: Jobs, runs: Runs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 6)
    job = jobs.start("reset", servers=ids, max_concurrency="1", max_errors="0", submitted_by="ci-bot")
    assert job["submitted_by"] == "ci-bot"
    assert jobs.control(job["id"], "pause", by="alice@ops")["state"] == "paused"
    wait_until(lambda: jobs.status(job["id"])["counts"].get("running", 0) == 0, 30, "the first run to end")
    started = [sid for sid in ids if control.posts(sid)]
    assert started == ids[:1], "nothing new started while paused"
    assert jobs.control(job["id"], "resume")["state"] == "running"
    wait_until(lambda: len([s for s in ids if control.posts(s)]) >= 2, 30, "the job to go on")
    assert jobs.control(job["id"], "cancel", by="bob@ops")["state"] == "cancelled"
    done = jobs.wait(job["id"], timeout=30, poll=0.3)
    assert done["state"] == "cancelled" and done["reason"] == "cancelled by bob@ops"
    # Who did what, in order; the job's runs carry its submitter, and the one in flight its canceller.
    assert [(c["verb"], c["by"]) for c in done["controls"]] == [
        ("pause", "alice@ops"), ("resume", default_submitter()), ("cancel", "bob@ops")
    ]  # fmt: skip
    records = [runs.status(e["run_id"]) for e in done["outcomes"].values() if e.get("run_id")]
    assert records and all(r["submitted_by"] == "ci-bot" for r in records)
    assert all(r["cancelled_by"] == "bob@ops" for r in records if r["state"] == "cancelled")
    wait_until(lambda: jobs.status(job["id"])["counts"].get("running", 0) == 0, 30, "in-flight runs to end")
    assert len([s for s in ids if control.posts(s)]) <= 3
    # The job is over when its last run is, not when it was cancelled (its runs may stop only later).
    ended = [runs.status(e["run_id"])["finished"] for e in done["outcomes"].values() if e.get("run_id")]
    assert jobs.status(job["id"])["finished"] >= max(ended)
    with pytest.raises(BadInput, match="already ended"):
        jobs.control(job["id"], "resume")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"selector": "env in (", "max_concurrency": "2", "max_errors": "0"}, "label selector"),
        ({"selector": "env=nowhere", "max_concurrency": "2", "max_errors": "0"}, "matches no server"),
        ({"selector": "", "max_concurrency": "2", "max_errors": "0"}, "empty"),
        ({"servers": [1, 2], "selector": "env=x", "max_concurrency": "2", "max_errors": "0"}, "exactly one"),
        ({"selector": "env=staging", "max_concurrency": "0", "max_errors": "0"}, "max_concurrency"),
        ({"selector": "env=staging", "max_concurrency": "-3", "max_errors": "0"}, "max_concurrency"),
        ({"selector": "env=staging", "max_concurrency": "2", "max_errors": "lots"}, "max_errors"),
        ({"selector": "env=staging", "max_concurrency": "2", "max_errors": "0", "canary": 999}, "canary"),
        ({"servers": ["no-such-server"], "max_concurrency": "2", "max_errors": "0"}, "no server named"),
    ],
)
def test_bad_fleet_input_is_refused_and_starts_nothing(
    jobs: Jobs, control: Control, redis_server: RedisServer, options: dict[str, Any], message: str
) -> None:
    before = (len(control.posts()), redis_server.client().zcard("hf:jobs"))
    with pytest.raises(BadInput, match=message):
        jobs.start("reboot", **options)
    assert (len(control.posts()), redis_server.client().zcard("hf:jobs")) == before


def test_approval_after_the_canary_through_real_workers(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 4)
    plan = jobs.plan(
        "reset", servers=ids, max_concurrency="2", max_errors="0", canary=1, approve_after_canary=True
    )
    assert plan["gates"] and "after the canary wave" in plan["gates"][0], "the dry run names the gate"
    job = jobs.start(
        "reset", servers=ids, max_concurrency="2", max_errors="0", canary=1, approve_after_canary=True,
        approval_timeout="10m", submitted_by="tester@ci",
    )  # fmt: skip
    held = wait_until(
        lambda: (j := jobs.status(job["id"]))["state"] == "awaiting_approval" and j, 30, "the gate"
    )
    assert [sid for sid in ids if control.posts(sid)] == ids[:1], "only the canary ran"
    assert held["approval"]["gate"] == "after_canary" and held["counts"]["succeeded"] == 1
    with pytest.raises(BadInput, match="not paused"):
        jobs.control(job["id"], "resume", by="tester@ci")
    jobs.control(job["id"], "approve", by="approver@ci")
    done = jobs.wait(job["id"], timeout=60, poll=0.3)
    assert done["state"] == "succeeded" and done["counts"]["succeeded"] == 4
    assert done["approved"]["after_canary"]["by"] == "approver@ci"
    assert all(len(control.posts(sid, "reset")) == 1 for sid in ids)


def test_a_rejected_job_starts_nothing(jobs: Jobs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 2)
    job = jobs.start("reset", servers=ids, max_concurrency="2", max_errors="0", approve_before_start=True)
    assert job["state"] == "awaiting_approval"
    answer = jobs.control(job["id"], "reject", by="bob@ci")
    assert answer["state"] == "cancelled"
    done = jobs.status(job["id"])
    assert done["reason"] == "rejected by bob@ci"
    assert {e["outcome"] for e in done["outcomes"].values()} == {"not_started"}
    assert not any(control.posts(sid) for sid in ids)


class Alerts:
    """An Alertmanager stand-in on a free port: GET answers the alerts it holds now, and counts the looks."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        alerts = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                alerts.looks += 1
                body = json.dumps(alerts.firing).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.firing: list[dict[str, Any]] = [{"labels": {"alertname": "PagerStorm"}}]
        self.looks = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2/alerts?active=true"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_firing_alert_holds_new_starts_until_it_clears(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 3)
    alerts = Alerts()
    try:
        plan = jobs.plan("reset", servers=ids, max_concurrency="3", max_errors="0", block_on=[alerts.url])
        assert "1 alert firing (PagerStorm)" in plan["blocked_now"] and plan["gates"]
        job = jobs.start("reset", servers=ids, max_concurrency="3", max_errors="0", block_on=[alerts.url])
        assert "PagerStorm" in job["blocked"]["reason"] and job["state"] == "running"
        looks = alerts.looks
        wait_until(lambda: alerts.looks >= looks + 2, 30, "the job to look again")
        assert not any(control.posts(sid) for sid in ids), "nothing starts while the alert fires"
        alerts.firing = []
        done = jobs.wait(job["id"], timeout=60, poll=0.3)
        assert done["state"] == "succeeded" and done["blocked"] is None
        assert all(len(control.posts(sid, "reset")) == 1 for sid in ids)
    finally:
        alerts.close()


def test_one_server_of_a_spread_group_at_a_time(jobs: Jobs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 6)
    group = control.send("POST", "/placement_groups", {"name": "db-spread", "servers": ids[:3]})
    assert group["placement_group"]["servers"] == ids[:3]
    plan = jobs.plan("reset", servers=ids, max_concurrency="6", max_errors="0", max_per_placement_group=1)
    assert {s["placement_group"] for s in plan["servers"][:3]} == {"db-spread"}
    job = jobs.start("reset", servers=ids, max_concurrency="6", max_errors="0", max_per_placement_group=1)
    done = jobs.wait(job["id"], timeout=90, poll=0.3)
    assert done["state"] == "succeeded", done
    assert in_flight_peak(control, ids[:3]) == 1, "the group's servers went one at a time"
    assert in_flight_peak(control, ids) >= 3, "the others filled the window meanwhile"


def test_health_checks_decide_when_a_server_is_done(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    import http.server
    import threading

    ids = take(pool, 3)
    sick = jobs.plan("reset", servers=ids, max_concurrency="3", max_errors="0")["servers"][2]["name"]
    looks: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            looks.append(self.path)
            self.send_response(503 if self.path.endswith("/" + sick) else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = f"http://127.0.0.1:{server.server_address[1]}/health/{{name}}"
        job = jobs.start(
            "reset", servers=ids, max_concurrency="3", max_errors="1", health_check=check,
            health_timeout="10s", health_settle="1s",
        )  # fmt: skip
        done = jobs.wait(job["id"], timeout=90, poll=0.3)
    finally:
        server.shutdown()
    assert done["state"] == "completed_with_failures", done
    outcomes = {s["name"]: done["outcomes"][s["id"]] for s in done["servers"]}
    assert outcomes[sick]["outcome"] == "failed"
    assert outcomes[sick]["reason"] == "health check not passed within 10 s (last: HTTP 503)"
    assert all(
        e["outcome"] == "succeeded" and e["health"]["state"] == "healthy"
        for n, e in outcomes.items()
        if n != sick
    )
    assert {p.rsplit("/", 1)[1] for p in looks} == {s["name"] for s in done["servers"]}
    assert all(len(control.posts(sid, "reset")) == 1 for sid in ids), "a health check posts nothing"


def lb_requests(control: Control, since: int) -> list[tuple[str, int | None, str]]:
    """Return (what, server, when) of the drain's target requests and the servers' action POSTs, in order."""
    out = []
    for r in control.get("/requests", since=since)["requests"]:
        if r["method"] != "POST" or r["status"] != 201:
            continue
        if r["path"].startswith("/load_balancers/"):
            out.append((r["route"].rsplit("/", 1)[1], None, r["time"]))
        elif r["server_id"] is not None:
            out.append((r["route"].rsplit("/", 1)[1], r["server_id"], r["time"]))
    return out


def test_drain_takes_servers_out_of_their_load_balancer_and_back(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 3)
    lb = control.send(
        "POST",
        "/load_balancers",
        {"name": "lb-drain", "ports": [80, 443], "servers": ids[:2], "health_delay": 60},
    )["load_balancer"]  # a target is "unknown" for 3 s (at speed 20) after it is added
    plan = jobs.plan("reboot", servers=ids, max_concurrency="1", max_errors="0")
    assert plan["warnings"] and "load-balancer targets" in plan["warnings"][0], (
        "a dry run without --drain warns"
    )
    plan = jobs.plan("reboot", servers=ids, max_concurrency="1", max_errors="0", drain=True)
    assert [s["load_balancers"] for s in plan["servers"]] == [["lb-drain"], ["lb-drain"], []]
    seq = control.get("/requests", since=0)["next"]
    job = jobs.start("reboot", servers=ids, max_concurrency="1", max_errors="0", drain=True)
    done = jobs.wait(job["id"], timeout=90, poll=0.3)
    assert done["state"] == "succeeded", done
    timeline = lb_requests(control, seq)
    posts = [(what, sid) for what, sid, _ in timeline]
    back_in = next(t for what, _, t in timeline if what == "add_target")
    next_out = [t for what, _, t in timeline if what == "remove_target"][1]
    assert next_out - back_in >= 3.0, "the next server waited until the first was healthy again"
    assert posts == [
        ("remove_target", None), ("reboot", ids[0]), ("add_target", None),
        ("remove_target", None), ("reboot", ids[1]), ("add_target", None),
        ("reboot", ids[2]),
    ], "out before its action, back after; the next server only once the first is healthy again"  # fmt: skip
    lb_now = Api(control.url.replace("/_fakecloud", "/v1")).get(f"/load_balancers/{lb['id']}")[
        "load_balancer"
    ]
    assert sorted(t["server"]["id"] for t in lb_now["targets"]) == sorted(ids[:2]), "both are back in"
    assert all(done["outcomes"][sid]["drain"]["state"] == "back" for sid in ids[:2])


def test_drain_refuses_label_selector_targets(jobs: Jobs, control: Control, pool: Iterator[int]) -> None:
    ids = take(pool, 2)
    control.send("PATCH", f"/servers/{ids[0]}", {"labels": {"role": "drainsel"}})
    control.send("POST", "/load_balancers", {"name": "lb-selector", "selectors": ["role=drainsel"]})
    before = len(control.posts())
    with pytest.raises(BadInput, match=r"through the label selector 'role=drainsel'"):
        jobs.start("reboot", servers=ids, max_concurrency="1", max_errors="0", drain=True)
    assert len(control.posts()) == before


def test_retry_starts_a_new_job_over_the_failed_servers(
    jobs: Jobs, control: Control, pool: Iterator[int]
) -> None:
    ids = take(pool, 3)
    control.send("PATCH", f"/servers/{ids[1]}", {"fail_next": {"command": "reset", "code": "action_failed"}})
    first = jobs.start(
        "reset", servers=ids, max_concurrency="3", max_errors="1", block_on=[], submitted_by="ops@a"
    )
    with pytest.raises(BadInput, match="retry it once it has ended"):
        jobs.retry(first["id"], failed=True)
    done = jobs.wait(first["id"], timeout=60, poll=0.3)
    assert done["state"] == "completed_with_failures" and done["outcomes"][ids[1]]["outcome"] == "failed"
    with pytest.raises(BadInput, match="no server that ended not_started or skipped"):
        jobs.retry(first["id"], failed=False, not_started=True)
    again = jobs.retry(first["id"], failed=True, by="ops@b")
    assert [s["id"] for s in again["servers"]] == [ids[1]] and again["retry_of"] == first["id"]
    assert again["max_errors"] == 1 and again["workflow"] == "reset" and again["submitted_by"] == "ops@b"
    second = jobs.wait(again["id"], timeout=60, poll=0.3)
    assert second["state"] == "succeeded"
    assert jobs.status(first["id"])["retried_by"] == [again["id"]]
    assert len(control.posts(ids[0], "reset")) == 1, "a server that succeeded is not run again"


def test_a_rebuild_jobs_user_data_is_gone_from_redis_once_its_servers_started(
    jobs: Jobs, control: Control, pool: Iterator[int], redis_server: RedisServer
) -> None:
    """An outside test: a fleet job's cloud-init text stayed in its record for the record's seven days. It is
    kept until the last server has started with it; a retry takes it again, checked by its fingerprint."""
    from ..support.audit import redis_blobs

    marker = "password: UD-FLEET-7c2a"
    user_data = f"#cloud-config\n{marker}\n"
    ids = take(pool, 2)
    control.send(
        "PATCH", f"/servers/{ids[1]}", {"fail_next": {"command": "rebuild", "code": "action_failed"}}
    )
    params = {"image": "ubuntu-24.04", "no_snapshot": True, "user_data": user_data}
    first = jobs.start("rebuild", servers=ids, max_concurrency="1", max_errors="1", params=params)
    done = jobs.wait(first["id"], timeout=90, poll=0.3)
    assert done["state"] == "completed_with_failures", done["outcomes"]
    assert not [b for b in redis_blobs(redis_server.client()) if marker.encode() in b]
    with pytest.raises(BadInput, match="give the same text again"):
        jobs.retry(first["id"], failed=True)
    again = jobs.retry(first["id"], failed=True, user_data=user_data)
    assert jobs.wait(again["id"], timeout=90, poll=0.3)["state"] == "succeeded"
    assert len(control.posts(ids[1], "rebuild")) == 2 and len(control.posts(ids[0], "rebuild")) == 1
    assert not [b for b in redis_blobs(redis_server.client()) if marker.encode() in b]

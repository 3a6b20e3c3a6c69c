"""Chaos: answers lost after the API acted, and a worker killed while budget waits are parked.

Both scenarios run a real fleet job (a private redis-server, two real `celery worker` processes, fakecloud
over HTTP) and judge it from fakecloud's own request log, not from what the workers believe. Each prints
what it did and what it saw.

- Lost answers: 40 servers at speed 20 (about 10 s), 15 % of action POSTs processed and their answers cut
  off, 5 % answered 503. Every action must be started once, and a rebuild whose answer was lost must say
  that its root password is lost.
- A worker killed with the production visibility timeout (600 s) while every first step of a 20-server job
  is parked for the drained budget: the other worker must resend them, and the job end long before 600 s.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from workers.engine import LOST_NOTICE
from workers.errors import HcloudFlowError
from workers.run_store import RunStore
from workers.sealing import generate_key
from workflows.api import Jobs
from workflows.fleet import JobStore

from ..conftest import start_cloud
from ..support.cloud import Api, Control, drain
from ..support.processes import RedisServer, Worker, client_app, wait_until, worker_env
from .test_chaos import fleet_ids, received_twice, report

pytestmark = [pytest.mark.chaos, pytest.mark.long, pytest.mark.timeout(300)]

KEY = generate_key()  # sealed passwords tell an answer read from one lost (LOST_NOTICE)
REBUILD_COMMANDS = ("shutdown", "create_image", "rebuild")
SNAPSHOT_COMMANDS = ("shutdown", "create_image", "poweron")
# The budget scenario's project: 720 requests an hour at speed 30 refills 6 a second, and fleet work may
# not spend the last 72 (the bulk reserve): from an empty bucket a step waits 12 s, longer than the 5 s a
# request may sleep for a token, so it is parked as a LATER wait.
BUDGET_LIMIT, BUDGET_SPEED = 720, 30.0
BUDGET_REFILL = BUDGET_LIMIT / 3600 * BUDGET_SPEED
VISIBILITY = 600.0  # production's HCLOUD_FLOW_VISIBILITY_TIMEOUT, kept on purpose
AFTER_KILL_BOUND = 120.0


@pytest.fixture()
def app(redis_server: RedisServer) -> Iterator[Celery]:
    a = client_app(redis_server.url)
    yield a
    a.close()


def action_posts(control: Control, ids: list[int]) -> list[dict[str, Any]]:
    """Return every action POST to these servers in fakecloud's log (any status), in the order received."""
    return [
        r
        for r in control.requests_log()
        if r["method"] == "POST" and r["server_id"] in ids and r.get("command")
    ]


def wait_or_status(jobs: Jobs, job_id: str, timeout: float) -> dict[str, Any]:
    """Return the job once it ended, or as it stands after ``timeout``: the report shows either."""
    try:
        return jobs.wait(job_id, timeout=timeout, poll=0.5)
    except HcloudFlowError:
        return jobs.status(job_id)


def runs_of(client: redis.Redis, done: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Return the run record of each server of a job that started one (records gone are left out)."""
    store = RunStore(client)
    records = {sid: store.get(e["run_id"]) for sid, e in done["outcomes"].items() if e.get("run_id")}
    return {sid: run for sid, run in records.items() if run is not None}


def step_named(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["name"] == name)


def rebuild_password(run: dict[str, Any]) -> dict[str, Any]:
    """Return what the run record keeps of the rebuild's root password: sealed, or a notice why not."""
    return dict(step_named(run, "rebuild").get("outputs", {}).get("root_password") or {})


def snapshots_by_server(api: Api, ids: list[int]) -> Counter[int]:
    """Count the snapshot images the API holds per server, as a user listing them would see."""
    count: Counter[int] = Counter()
    page: int | None = 1
    while page:
        body = api.get("/images", type="snapshot", page=page, per_page=50)
        for image in body["images"]:
            origin = (image.get("created_from") or {}).get("id")
            if origin in ids:
                count[origin] += 1
        page = body["meta"]["pagination"]["next_page"]
    return count


def parked(client: redis.Redis) -> dict[str, list[str]]:
    """Return the ids of the parked waits by phase (``hf:waits`` + ``hf:wait:<id>``)."""
    ids = [i.decode() for i in client.zrange("hf:waits", 0, -1)]
    raws = client.mget([f"hf:wait:{i}" for i in ids]) if ids else []
    out: dict[str, list[str]] = {}
    for wait_id, raw in zip(ids, raws, strict=True):
        if raw:
            out.setdefault(json.loads(raw)["phase"], []).append(wait_id)
    return out


def unacked(client: redis.Redis) -> list[tuple[str, bool]]:
    """Return (task id, has a countdown) of each message a worker holds unacknowledged (kombu's hash)."""
    out = []
    for raw in client.hvals("unacked"):
        headers = json.loads(raw)[0].get("headers") or {}
        out.append((str(headers.get("id")), headers.get("eta") is not None))
    return sorted(out)


def holder_of(task_id: str, workers: list[Worker]) -> str:
    """Return ``task@worker``: the worker that received the task last (a resent step keeps its id)."""
    pattern = re.compile(
        rb"^\[([^\]]+): INFO/MainProcess\] Task hcloud_flow\.(\w+)\["
        + re.escape(task_id.encode())
        + rb"\] received",
        re.MULTILINE,
    )
    seen = [
        (m.group(1), m.group(2).decode(), w.name)
        for w in workers
        for m in pattern.finditer(w.log.read_bytes())
    ]
    if not seen:
        return f"{task_id}@not received"
    _, task, worker = max(seen)
    return f"{task}@{worker}"


def test_lost_answers_on_a_fleet_rebuild_start_each_action_once(
    redis_server: RedisServer, app: Celery, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud = start_cloud(servers=45, speed=20.0, seed=2027)
    try:
        ids = fleet_ids(cloud, 40)  # running, ACPI honoured: no forced power-off is expected
        control = Control(cloud.control_url)
        # Faults only now: the test's own listing above must not meet them.
        control.send("PUT", "/config", {"faults": "drop_answer=0.15,503=0.05"})
        env = worker_env(
            redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_SECRET_KEY=KEY
        )
        workers = [Worker(f"lost-answers-{n}", env, logdir) for n in range(2)]
        jobs = Jobs(app, JobStore(redis_server.client()))
        t0 = time.monotonic()
        try:
            job = jobs.start(
                "rebuild", servers=ids, params={"image": "ubuntu-24.04"}, max_concurrency="20", max_errors="0"
            )
            done = wait_or_status(jobs, job["id"], 150)
        finally:
            for w in workers:
                w.stop()
        wall = time.monotonic() - t0
        control.send("PUT", "/config", {"faults": "none"})
        posts = action_posts(control, ids)
        stats = control.get("/stats")
        images = snapshots_by_server(Api(cloud.base_url), ids)
    finally:
        cloud.stop()
    ok = Counter((p["server_id"], p["command"]) for p in posts if p["status"] == 201)
    dropped = [p for p in posts if p.get("dropped")]
    runs = runs_of(redis_server.client(), done)
    lost_rebuilds = {p["server_id"] for p in dropped if p["command"] == "rebuild"}
    noticed = {
        s for s in lost_rebuilds if s in runs and rebuild_password(runs[s]).get("notice") == LOST_NOTICE
    }
    # A POST of the same command on the same server after its answer was lost is one sent blindly again.
    resent = [
        p
        for d in dropped
        for p in posts
        if p["server_id"] == d["server_id"] and p["command"] == d["command"] and p["seq"] > d["seq"]
    ]
    forced = {s for s, r in runs.items() if step_named(r, "shutdown").get("forced")}
    report(
        capsys,
        "lost answers (drop_answer=0.15, 503=0.05) during a 40-server fleet rebuild",
        {
            "wall time": f"{wall:.1f} s",
            "job": done["state"],
            "outcomes": done["counts"],
            "injected faults served": stats["injected_faults"],
            "answers dropped (request log)": f"{len(dropped)} {dict(Counter(p['command'] for p in dropped))}",
            "action POSTs by status": dict(Counter(p["status"] for p in posts)),
            "201 POSTs per server and command": {
                c: dict(Counter(ok[(s, c)] for s in ids)) for c in (*REBUILD_COMMANDS, "poweroff", "poweron")
            },
            "POSTs after a lost answer (same server, same command)": len(resent),
            "rebuild answers lost -> 'root password lost' notices": (
                f"{len(lost_rebuilds)} -> {len(noticed)}"
            ),
            "forced power-offs": len(forced),
            "failed runs": [
                f"{r['server_id']}: {r['error']}" for r in runs.values() if r["state"] != "succeeded"
            ][:5]
            or "none",
            "snapshots per server": dict(Counter(images[s] for s in ids)),
            "tasks received more than once": received_twice(workers),
        },
    )
    assert done["state"] == "succeeded" and done["counts"].get("succeeded") == 40, done["counts"]
    assert len(runs) == 40 and all(r["state"] == "succeeded" for r in runs.values())
    assert len(dropped) >= 3, "the lost answers were really served"
    assert all(p["status"] == 201 for p in dropped)
    for sid in ids:
        for command in REBUILD_COMMANDS:
            assert ok[(sid, command)] == 1, (sid, command, ok[(sid, command)])
        assert ok[(sid, "poweroff")] == (1 if sid in forced else 0), (sid, "poweroff")
        assert ok[(sid, "poweron")] == 0, (sid, "poweron: the rebuilt server runs, power_on is skipped")
    assert not resent, f"POSTed again after a lost answer: {resent[:5]}"
    for sid, run in runs.items():
        password = rebuild_password(run)
        if sid in lost_rebuilds:
            assert password == {"sealed": None, "notice": LOST_NOTICE}, (sid, password)
        else:
            assert password.get("sealed"), (sid, password)  # read from its answer, sealed with KEY
    assert all(images[s] == 1 for s in ids), {s: images[s] for s in ids if images[s] != 1}


def test_worker_killed_while_budget_waits_are_parked(
    redis_server: RedisServer, app: Celery, logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud = start_cloud(servers=25, speed=BUDGET_SPEED, seed=2028, rate_limit=BUDGET_LIMIT)
    client = redis_server.client()
    control = Control(cloud.control_url)
    try:
        ids = fleet_ids(cloud, 20)
        env = worker_env(
            redis_server.url,
            cloud.base_url,
            HCLOUD_FLOW_RATE_REFILL=f"{BUDGET_REFILL:g}",
            HCLOUD_FLOW_VISIBILITY_TIMEOUT=f"{VISIBILITY:g}",
        )
        workers = [Worker(f"budget-kill-{n}", env, logdir) for n in range(2)]
        jobs = Jobs(app, JobStore(client))
        try:
            left = drain(cloud.base_url, leave=2)  # as another tool on the same project would
            t0 = time.monotonic()
            job = jobs.start("snapshot", servers=ids, max_concurrency="20", max_errors="0")
            started = time.monotonic() - t0

            # Until every run's first step is parked: from the drained bucket each must wait about 12 s.
            def all_parked() -> list[str]:
                later = parked(client).get("later", [])
                return later if len(later) == len(ids) else []

            later = wait_until(all_parked, 30, "every first step to be parked for the budget")
            parked_after = time.monotonic() - t0
            by_worker = Counter(holder_of(i, workers).split("@")[1] for i in later)
            # The victim: the worker that parked more of them (before, it would hold them as countdowns).
            victim = max(workers, key=lambda w: by_worker[w.name])
            at_kill = {phase: len(w) for phase, w in parked(client).items()}
            held = [(holder_of(i, workers), eta) for i, eta in unacked(client)]
            progress = jobs.status(job["id"])["counts"]
            spent = control.get("/stats")["total"]
            victim.kill()
            t_kill = time.monotonic()
            done = wait_or_status(jobs, job["id"], AFTER_KILL_BOUND)
            after_kill = time.monotonic() - t_kill
            spent = control.get("/stats")["total"] - spent
            # The job is told it ended (the last run's record) a moment before the monitor forgets that
            # run's last wait: read the leftovers once they have had that moment (the suite's one flake).
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not client.zcard("hf:waits") and not unacked(client), 10, "leftovers")
            still_held = [holder_of(i, workers) for i, _ in unacked(client)]
            waits_left = client.zcard("hf:waits")
        finally:
            for w in workers:
                w.stop()
        posts = action_posts(control, ids)
        stats = control.get("/stats")
    finally:
        cloud.stop()
    ok = Counter((p["server_id"], p["command"]) for p in posts if p["status"] == 201)
    report(
        capsys,
        f"a worker SIGKILLed while budget waits are parked (visibility timeout {VISIBILITY:g} s)",
        {
            "budget": f"{BUDGET_LIMIT}/h at speed {BUDGET_SPEED:g} = {BUDGET_REFILL:g}/s",
            "budget left at the start (drained)": left,
            "servers": len(ids),
            "job started (all runs submitted) after": f"{started:.1f} s",
            "every first step parked (LATER) after": f"{parked_after:.1f} s",
            "parked waits at the kill": at_kill,
            "budget (LATER) waits at the kill, by the worker that parked them": dict(by_worker),
            "victim": f"{victim.name} (parked {by_worker[victim.name]} of them)",
            "messages unacknowledged at the kill (task@worker, countdown)": held or "none",
            "job counts at the kill": progress,
            "job": done["state"],
            "outcomes": done["counts"],
            "finished after the kill": f"{after_kill:.1f} s",
            "API requests after the kill": f"{spent} (refill alone needs {spent / BUDGET_REFILL:.1f} s)",
            "messages still unacknowledged at the end": still_held or "none",
            "429s served": stats["rate_limited"],
            "201 POSTs per server and command": {
                c: dict(Counter(ok[(s, c)] for s in ids)) for c in SNAPSHOT_COMMANDS
            },
        },
    )
    assert at_kill.get("later") == len(ids) and by_worker[victim.name] > 0
    assert done["state"] == "succeeded" and done["counts"].get("succeeded") == len(ids), done["counts"]
    # A bound on behaviour, not on speed: a step held by the dead worker would be back only after 600 s.
    assert after_kill < AFTER_KILL_BOUND
    assert waits_left == 0 and not still_held, "nothing is left parked or held by the dead worker"
    assert all(ok[(s, c)] == 1 for s in ids for c in SNAPSHOT_COMMANDS)

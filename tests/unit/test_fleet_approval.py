"""Approval gates: the rule (pure) and the runner's handling (real Redis, a clock we move, no API)."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import BadInput
from workflows.fleet import ORPHAN_AFTER, FleetRunner, JobStore
from workflows.fleet_plan import JOB_CONTROLS, decide
from workflows.specs import FleetSpec, checked

from ..support.processes import RedisServer

BOTH = frozenset({"before_start", "after_canary"})


def test_before_start_holds_every_server_until_approved() -> None:
    d = decide([1, 2, 3], {}, window=2, max_errors=0, canary=0, closed=frozenset({"before_start"}))
    assert (d.start, d.state, d.gate) == ((), "awaiting_approval", "before_start")
    assert decide([1, 2, 3], {}, window=2, max_errors=0, canary=0).start == (1, 2)


def test_after_canary_holds_once_the_canary_wave_succeeded_and_not_before() -> None:
    gate = frozenset({"after_canary"})
    assert decide([1, 2, 3], {}, window=2, max_errors=0, canary=1, closed=gate).start == (1,)
    running = decide([1, 2, 3], {1: "running"}, window=2, max_errors=0, canary=1, closed=gate)
    assert (running.start, running.state) == ((), "running"), "the canary is still in flight"
    held = decide([1, 2, 3], {1: "succeeded"}, window=2, max_errors=0, canary=1, closed=gate)
    assert (held.state, held.gate) == ("awaiting_approval", "after_canary")
    failed = decide([1, 2, 3], {1: "failed"}, window=2, max_errors=5, canary=1, closed=gate)
    assert failed.state == "failed", "a failed canary ends the job; there is nothing to approve"
    opened = decide([1, 2, 3], {1: "succeeded"}, window=2, max_errors=0, canary=1)
    assert opened.start == (2, 3)


def test_a_job_whose_servers_were_all_canaries_needs_no_approval() -> None:
    d = decide([1], {1: "succeeded"}, window=1, max_errors=0, canary=1, closed=BOTH - {"before_start"})
    assert d.state == "succeeded"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"approve_after_canary": True}, "needs a canary wave"),
        ({"approve_before_start": "yes"}, "must be true or false"),
        ({"approval_timeout": "10s"}, "from 1m to 7d"),
        ({"approval_timeout": "8d"}, "from 1m to 7d"),
        ({"approval_timeout": "soon"}, "must look like"),
    ],
)
def test_gate_options_are_refused_before_anything_starts(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        checked(FleetSpec, {"workflow": "reboot", "servers": [1, 2], **fields})


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def runner_on(redis_server: RedisServer, prefix: str) -> tuple[FleetRunner, JobStore, Clock, dict[str, Any]]:
    clock = Clock()
    store = JobStore(redis_server.client(), prefix=prefix, clock=clock)
    seen: dict[str, Any] = {"kicks": [], "events": [], "cancelled": []}

    def submit(**kw: Any) -> dict[str, Any]:
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(
        store,
        None,  # type: ignore[arg-type]
        submit,
        lambda run_id, by: seen["cancelled"].append((run_id, by)),
        kick=lambda job_id, delay: seen["kicks"].append(delay),
        fresh_for=0,
        on_event=lambda event, job: seen["events"].append((event, job["state"])),
    )
    return runner, store, clock, seen


def job(store: JobStore, job_id: str, gates: list[str], canary: int = 1, window: Any = None) -> None:
    store.create(
        {
            "id": job_id, "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}"} for i in (1, 2, 3)], "max_concurrency": 3,
            "max_errors": 0, "canary": canary, "limits": {}, "window": window, "gates": gates,
            "approval_timeout": 600,
        }
    )  # fmt: skip


def states(store: JobStore, job_id: str) -> dict[int, str]:
    return {s: e["outcome"] for s, e in store.get(job_id)["outcomes"].items()}  # type: ignore[index]


def test_approved_after_the_canary_the_rest_start_and_who_approved_is_recorded(
    redis_server: RedisServer,
) -> None:
    runner, store, clock, seen = runner_on(redis_server, "ap1")
    job(store, "j1", ["after_canary"])
    runner.advance("j1")
    assert states(store, "j1") == {1: "running"}
    runner.on_run_ended({"id": "run-1", "job_id": "j1", "server_id": 1, "state": "succeeded"})
    held = store.get("j1")
    assert held is not None and held["state"] == "awaiting_approval"
    assert held["approval"]["gate"] == "after_canary" and held["approval"]["deadline"] == 1600.0
    assert seen["kicks"] == [600.5], "an advance is asked for at the deadline"
    assert ("job.awaiting_approval", "awaiting_approval") in seen["events"]
    with pytest.raises(BadInput, match="not paused"):
        runner.control("j1", "resume", "ops@host")  # approval is its own verb
    clock.now = 1100.0
    runner.control("j1", "approve", "alice@laptop")
    done = store.get("j1")
    assert done is not None and done["state"] == "running"
    assert states(store, "j1") == {1: "succeeded", 2: "running", 3: "running"}
    assert done["approved"] == {"after_canary": {"by": "alice@laptop", "at": 1100.0}}
    assert [c["verb"] for c in done["controls"]] == ["approve"]
    with pytest.raises(BadInput, match="not awaiting approval"):
        runner.control("j1", "approve", "alice@laptop")


def test_rejected_the_job_is_cancelled_and_its_servers_not_started(redis_server: RedisServer) -> None:
    runner, store, _, seen = runner_on(redis_server, "ap2")
    job(store, "j2", ["before_start"], canary=0)
    runner.advance("j2")
    assert store.get("j2")["state"] == "awaiting_approval" and states(store, "j2") == {}  # type: ignore[index]
    runner.control("j2", "reject", "bob@ops")
    done = store.get("j2")
    assert done is not None and done["state"] == "cancelled" and done["reason"] == "rejected by bob@ops"
    assert states(store, "j2") == {1: "not_started", 2: "not_started", 3: "not_started"}
    assert seen["events"][-1] == ("job.ended", "cancelled")


def test_no_answer_by_the_deadline_cancels_the_job(redis_server: RedisServer) -> None:
    runner, store, clock, _ = runner_on(redis_server, "ap3")
    job(store, "j3", ["before_start"], canary=0)
    runner.advance("j3")
    clock.now = 1599.0
    runner.advance("j3")  # an early kick (or any other advance) changes nothing
    assert store.get("j3")["state"] == "awaiting_approval"  # type: ignore[index]
    clock.now = 1600.5
    runner.advance("j3")
    done = store.get("j3")
    assert done is not None and done["state"] == "cancelled"
    assert done["reason"] == "no approval within 600 s (approval before the first server starts)"
    assert set(states(store, "j3").values()) == {"not_started"}


def test_a_pause_at_the_gate_keeps_its_deadline(redis_server: RedisServer) -> None:
    runner, store, clock, _ = runner_on(redis_server, "ap4")
    job(store, "j4", ["before_start"], canary=0)
    runner.advance("j4")
    runner.control("j4", "pause", "ops")
    clock.now = 1300.0
    runner.control("j4", "resume", "ops")
    held = store.get("j4")
    assert held is not None and held["state"] == "awaiting_approval"
    assert held["approval"]["deadline"] == 1600.0, "pausing does not buy time"
    runner.control("j4", "pause", "ops")
    with pytest.raises(BadInput, match="paused at its approval gate: resume it first"):
        runner.control("j4", "approve", "ops")
    clock.now = 1600.5
    runner.advance("j4")  # the deadline's kick finds it paused: the deadline holds all the same
    done = store.get("j4")
    assert done is not None and done["state"] == "cancelled"
    assert done["reason"] == "no approval within 600 s (approval before the first server starts)"


def test_a_windows_job_waits_no_later_than_its_cutoff(redis_server: RedisServer) -> None:
    runner, store, _, _ = runner_on(redis_server, "ap5")
    job(store, "j5", ["before_start"], canary=0, window={"name": "w", "cutoff_at": 1200.0, "ends_at": 1300.0})
    runner.advance("j5")
    assert store.get("j5")["approval"]["deadline"] == 1200.0  # type: ignore[index]


def test_every_control_verb_is_a_method_of_the_runner() -> None:
    assert all(callable(getattr(FleetRunner, verb, None)) for verb in JOB_CONTROLS)
    with pytest.raises(BadInput, match="verb must be one of"):
        FleetRunner.control(None, "j", "explode")  # type: ignore[arg-type]


def test_awaiting_approval_is_told_once_with_a_clock_that_moves(redis_server: RedisServer) -> None:
    """Every read of a real clock differs: the gate must not be told by comparing two of them."""
    runner, store, _, seen = runner_on(redis_server, "ap6")

    class Moving(Clock):
        def __call__(self) -> float:
            self.now += 0.001
            return self.now

    store.clock = Moving()
    job(store, "j6", ["before_start"], canary=0)
    runner.advance("j6")
    runner.control("j6", "pause", "ops")
    runner.control("j6", "resume", "ops")
    assert [e for e, _ in seen["events"]].count("job.awaiting_approval") == 1


def test_a_job_cancelled_with_runs_in_flight_tells_its_end_once_they_have_ended(
    redis_server: RedisServer,
) -> None:
    """An outside test: "job.ended" went out at the cancel with 4 runs still running, and how they ended was
    never told."""
    runner, store, _, seen = runner_on(redis_server, "ap9")
    job(store, "j9", [], canary=0)
    runner.advance("j9")
    runner.control("j9", "cancel", "bob@ops")
    assert sorted(c[0] for c in seen["cancelled"]) == ["run-1", "run-2", "run-3"]
    assert seen["events"] == [], "runs are in flight: the job has not ended"

    ends = [("run-1", 1, "succeeded"), ("run-2", 2, "cancelled"), ("run-3", 3, "cancelled")]
    for run_id, sid, state in ends:
        runner.on_run_ended({"id": run_id, "server_id": sid, "state": state, "job_id": "j9"})
    runner.on_run_ended({"id": "run-3", "server_id": 3, "state": "cancelled", "job_id": "j9"})  # redelivered
    assert seen["events"] == [("job.ended", "cancelled")]
    assert store.get("j9")["counts"] == {"succeeded": 1, "cancelled": 2, "pending": 0}  # type: ignore[index]


def test_a_firing_at_its_previous_jobs_approval_deadline_ends_that_job_and_starts_anew(
    redis_server: RedisServer,
) -> None:
    """An outside test: a window's cutoff fell on its next firing; the job still awaiting approval there was
    said to block that firing, and ended half a second later."""
    import json

    from workflows.windows import WindowStore, fire, validate_window

    runner, store, clock, _ = runner_on(redis_server, "ap10")
    windows = WindowStore(store.redis, app=None, prefix="ap10")
    spec = {"name": "w", "cron": "* * * * *", "tz": "UTC", "duration": "3m", "cutoff": "1m"}
    window = validate_window({**spec, "workflow": "reboot", "servers": [1], "approve_before_start": True})
    job(
        store,
        "old",
        ["before_start"],
        canary=0,
        window={"cutoff_at": clock.now + 60, "ends_at": clock.now + 180},
    )
    runner.advance("old")
    assert store.get("old")["approval"]["deadline"] == clock.now + 60  # type: ignore[index]
    store.redis.set(windows._key("w"), json.dumps({**window, "last_job": "old"}))
    started: list[dict[str, Any]] = []

    class Runner:  # the fleet runner of the window's project, its start recorded
        def __init__(self) -> None:
            self.store, self.advance = store, runner.advance

        def start(self, **kw: Any) -> dict[str, Any]:
            started.append(kw)
            return {"id": "new", "servers": [1]}

    clock.now += 60  # the next firing comes at the old job's cutoff, before the old job's own wake-up
    fired = fire(windows, lambda project: Runner(), "w", clock.now)
    assert fired["outcome"] == "started" and started, fired
    old = store.get("old")
    assert old is not None and old["state"] == "cancelled"
    assert old["reason"].startswith("no approval before the maintenance window's cutoff (approval")


def test_a_cancelled_job_whose_run_never_started_still_ends_and_tells_it(redis_server: RedisServer) -> None:
    """A reviewer: a run whose first message was lost, in a job then cancelled, stayed `cancelling` for ever
    (the sweep looked only at running jobs), and the job never told its end."""
    from workers.run_store import RunStore

    runner, store, clock, seen = runner_on(redis_server, "ap11")
    runs = RunStore(redis_server.client(), prefix="ap11r", clock=clock)
    runner.run_store = runs
    kicks: list[float] = []
    runner.kick = lambda job_id, delay: kicks.append(delay)
    runner.cancel_run = lambda run_id, by: runs.set_state(run_id, "cancelling")  # as cancel_run does
    for sid in (1, 2, 3):  # its runs' records: submitted, their first messages never taken
        runs.create({"id": f"run-{sid}", "workflow": "reboot", "server_id": sid, "steps": []}, "queued")
    job(store, "j11", [], canary=0)
    runner.advance("j11")
    runner.control("j11", "cancel", "ops")
    assert seen["events"] == [] and kicks, "runs in flight: not ended yet, looked at again later"

    clock.now += ORPHAN_AFTER + 1
    runner.advance("j11")  # the kick
    done = store.get("j11")
    assert done is not None and done["counts"] == {"cancelled": 3, "pending": 0}
    assert seen["events"] == [("job.ended", "cancelled")]
    assert {runs.state(f"run-{sid}") for sid in (1, 2, 3)} == {"cancelled"}

"""A run's ending is one write: no reader ever sees a run ended that still owes its server a power-on."""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers.errors import ActionFailed
from workers.run_store import RunStore, has_ended
from workers.runs import RunHooks, error_info

from ..support.processes import RedisServer


class WatchedStore(RunStore):
    """A RunStore that, after each state write, reads the record back as another process would."""

    seen: list[dict[str, Any]]

    def set_state(self, run_id: str, state: Any, **fields: Any) -> None:
        super().set_state(run_id, state, **fields)
        record = self.get(run_id, live=False)
        assert record is not None
        self.seen.append(record)


def test_a_failed_snapshot_is_never_seen_ended_before_its_power_on_is_under_way(
    redis_server: RedisServer,
) -> None:
    store = WatchedStore(redis_server.client(), prefix="ending")
    store.seen = []
    app = Celery("ending", broker="memory://", set_as_current=False)
    hooks = RunHooks(store, app)
    both, before_start = ["failed", "cancelled"], ["cancelled"]
    steps = [
        {"index": 0, "name": "shutdown", "action": "shutdown", "task_id": "t0", "restore": both},
        {"index": 1, "name": "create_image", "action": "create_image", "task_id": "t1", "restore": both},
        {"index": 2, "name": "power_on", "action": "power_on", "task_id": "t2", "restore": before_start},
    ]
    meta = {"id": "run-1", "workflow": "snapshot", "server_id": 5, "server_name": "srv-5", "params": {},
            "server_status_before": "running", "steps": steps, "lock_ttl": 600}  # fmt: skip
    store.create(meta, "running")
    assert store.acquire(5, "run-1", 600) is None
    hooks.step_failed("run-1", "t1", ActionFailed(5, "create_image", 77, "action_failed", "disk error"))
    ended = [r for r in store.seen if r["state"] == "failed"]
    assert ended, "the run was never recorded failed"
    # Every look at the record after it turned failed shows the restore under way, until it is done.
    assert not any(has_ended(r) for r in ended)
    assert ended[0]["restore"]["state"] == "powering_on"
    assert store.holder(5) == "run-1"  # still held for the power-on


def test_a_run_that_gave_up_while_its_action_ran_on_does_not_say_what_the_server_was_before(
    redis_server: RedisServer,
) -> None:
    """An outside test: a rebuild past its deadline ended "failed, left off" while the rebuild still ran,
    and the server came up running on the new image ten seconds later."""
    from workers.errors import WaitTimeout
    from workers.wait_state import Observation, Phase, Wait, advance, rules_for

    store = RunStore(redis_server.client(), prefix="gaveup")
    hooks = RunHooks(store, Celery("gaveup", broker="memory://", set_as_current=False))
    steps = [
        {"index": 0, "name": "shutdown", "action": "shutdown", "task_id": "t0", "restore": ["failed"],
         "status": "succeeded", "server_status": "off"},
        {"index": 1, "name": "rebuild", "action": "rebuild", "task_id": "t1", "restore": []},
    ]  # fmt: skip
    meta = {"id": "run-2", "workflow": "rebuild", "server_id": 6, "server_name": "srv-6", "params": {},
            "server_status_before": "running", "steps": steps, "lock_ttl": 600}  # fmt: skip
    store.create(meta, "running")
    # What the monitor decides when the deadline passes with the action still running.
    waiting = Wait(id="t1", action="rebuild", step="rebuild", server_id=6, phase=Phase.ACTION, started=0.0,
                   deadline=5.0, next=5.0, action_id=88)  # fmt: skip
    _, effect = advance(waiting, Observation(6.0), rules_for("rebuild"), cadence=None)  # type: ignore[arg-type]
    error = effect.error  # type: ignore[union-attr]
    assert isinstance(error, WaitTimeout) and error.action_running
    hooks.step_failed("run-2", "t1", error)
    record = store.get("run-2", live=False)
    assert record is not None and record["state"] == "failed"
    assert record["error"]["action_running"] is True
    assert record["left"]["status"] == "unknown", "not 'off': the rebuild was still running"
    assert "before it saw its action 88 finish" in record["left"]["why"]
    # A wait that gave up on the server's state, its action done, keeps saying what the run last saw.
    settled = WaitTimeout(6, "rebuild", 88, "the off state", 5.0)
    assert settled.action_running is None and "action_running" not in error_info(settled)


def test_a_power_on_that_gave_up_while_it_ran_on_does_not_say_not_running(redis_server: RedisServer) -> None:
    """A reviewer: the step that starts the server again, past its deadline, said "not running" of a server
    whose power on went on and brought it up."""
    from workers.errors import WaitTimeout

    store = RunStore(redis_server.client(), prefix="starter")
    hooks = RunHooks(store, Celery("starter", broker="memory://", set_as_current=False))
    both, before_start = ["failed", "cancelled"], ["cancelled"]
    steps = [
        {"index": 0, "name": "shutdown", "action": "shutdown", "task_id": "t0", "restore": both,
         "status": "succeeded", "server_status": "off"},
        {"index": 1, "name": "create_image", "action": "create_image", "task_id": "t1", "restore": both,
         "status": "succeeded"},
        {"index": 2, "name": "power_on", "action": "power_on", "task_id": "t2", "restore": before_start},
    ]  # fmt: skip
    meta = {"id": "run-3", "workflow": "snapshot", "server_id": 7, "server_name": "srv-7", "params": {},
            "server_status_before": "running", "steps": steps, "lock_ttl": 600}  # fmt: skip
    store.create(meta, "running")
    hooks.step_failed("run-3", "t2", WaitTimeout(7, "power_on", 99, "action 99 to finish", 5.0, True))
    record = store.get("run-3", live=False)
    assert record is not None and record["restore"] is None
    assert record["left"]["status"] == "unknown" and "action 99" in record["left"]["why"]
    failed = WaitTimeout(7, "power_on", 99, "the running state", 5.0)  # its action done, the state not
    store.create({**meta, "id": "run-4"}, "running")
    hooks.step_failed("run-4", "t2", failed)
    assert store.get("run-4", live=False)["left"]["status"] == "not running"  # type: ignore[index]


def test_a_queued_run_records_the_status_it_found_where_it_was_planned_for_another(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """An outside test: a run queued for the running server the run ahead was to leave found it off; its
    record kept "running", and a failure then said it left the server running."""
    import workers.runs as runs_module

    store = RunStore(redis_server.client(), prefix="found")
    sent: list[str] = []
    hooks = RunHooks(
        store, Celery("found", broker="memory://", set_as_current=False), status_of=lambda run: "off"
    )
    monkeypatch.setattr(hooks, "start", lambda run: sent.append(run["id"]))
    monkeypatch.setattr(runs_module, "PLAN_CHECKS", [lambda run, now: None])  # a plan that reads no status
    steps = [{"index": 0, "name": "reboot", "action": "reboot", "task_id": "q0", "restore": []}]
    meta = {"id": "q1", "workflow": "reboot", "server_id": 6, "server_name": "srv-6", "params": {},
            "server_status_before": "running", "steps": steps, "lock_ttl": 600}  # fmt: skip
    store.create(meta, "queued")
    store.enqueue(6, "q1")
    hooks.start_next(6)
    assert sent == ["q1"]
    assert (store.get("q1", live=False) or {})["server_status_before"] == "off"

"""A step's start is written in one round trip and never over what a faster delivery of it stored."""

from __future__ import annotations

import uuid

from workers.run_store import RunStore

from ..support.processes import RedisServer


def _run(store: RunStore) -> str:
    run_id = uuid.uuid4().hex
    steps = [{"index": 0, "name": "power_on", "task_id": f"{run_id}-0"}]
    store.create({"id": run_id, "server_id": 7, "workflow": "w", "steps": steps})
    return run_id


def test_a_steps_start_is_recorded_once_and_never_over_a_later_status(redis_server: RedisServer) -> None:
    store = RunStore(redis_server.client(), prefix=f"rs{uuid.uuid4().hex[:6]}")
    run_id = _run(store)
    store.start_step(run_id, 0, 100.0)
    step = store.get(run_id, live=False)["steps"][0]  # type: ignore[index]
    assert (step["status"], step["started"]) == ("running", 100.0)
    # A second delivery of the step read "pending" before the first one succeeded: its late start write
    # must not turn the success (and its outputs) back into "running".
    other = _run(store)
    store.update_step(other, 0, status="succeeded", action_id=5, outputs={"image": {"id": 9}}, finished=3.0)
    store.start_step(other, 0, 200.0)
    step = store.get(other, live=False)["steps"][0]  # type: ignore[index]
    assert step["status"] == "succeeded" and step["outputs"] == {"image": {"id": 9}} and "started" not in step

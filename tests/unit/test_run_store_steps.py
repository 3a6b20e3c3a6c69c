"""What a step's start writes, in one round trip: never over what a faster delivery of the step stored, and
for a run's first step, the run running without its chain (also in records written before the chain had a
field of its own)."""

from __future__ import annotations

import json
import uuid

from workers.run_store import RunStore

from ..support.processes import RedisServer


def _store(redis_server: RedisServer) -> RunStore:
    return RunStore(redis_server.client(), prefix=f"rs{uuid.uuid4().hex[:6]}")


def _run(store: RunStore, chain: dict[str, object] | None = None) -> str:
    run_id = uuid.uuid4().hex
    steps = [{"index": 0, "name": "power_on", "task_id": f"{run_id}-0"}]
    meta = {"id": run_id, "server_id": 7, "workflow": "w", "steps": steps, "lock_ttl": 60, "chain": chain}
    store.create(meta)
    assert store.acquire(7, run_id, 60) is None
    return run_id


def test_a_steps_start_is_recorded_once_and_never_over_a_later_status(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    run_id = _run(store, {"task": "x", "kwargs": {"secret": "s"}})
    assert store.get(run_id, live=False)["chain"]["task"] == "x"  # type: ignore[index]
    store.begin_step(store.get(run_id, live=False), 0, 100.0, first=True)  # type: ignore[arg-type]
    run = store.get(run_id, live=False)
    assert run is not None and run["state"] == "running" and run["started"] == 100.0
    assert "chain" not in run and b"secret" not in store.redis.hget(store._run(run_id), "meta")
    assert (run["steps"][0]["status"], run["steps"][0]["started"]) == ("running", 100.0)
    assert store.redis.pttl(store._lock(7)) > 0
    # A second delivery of the step read "pending" before the first one succeeded: its late start write
    # must not turn the success (and its outputs) back into "running".
    pending = store.get(run_id, live=False)
    pending["steps"][0]["status"] = "pending"  # type: ignore[index]
    store.update_step(run_id, 0, status="succeeded", action_id=5, outputs={"image": {"id": 9}}, finished=3.0)
    store.begin_step(pending, 0, 200.0, first=False)  # type: ignore[arg-type]
    step = store.get(run_id, live=False)["steps"][0]  # type: ignore[index]
    assert step["status"] == "succeeded" and step["outputs"] == {"image": {"id": 9}}
    assert step["started"] == 100.0


def test_a_record_written_with_the_chain_in_its_meta_loses_it_at_its_first_step(
    redis_server: RedisServer,
) -> None:
    store = _store(redis_server)
    run_id = _run(store)
    key = store._run(run_id)
    meta = json.loads(store.redis.hget(key, "meta"))
    store.redis.hset(key, "meta", json.dumps({**meta, "chain": {"task": "old"}}))  # as an older version wrote
    assert store.get(run_id, live=False)["chain"] == {"task": "old"}  # type: ignore[index]
    store.begin_step(store.get(run_id, live=False), 0, 5.0, first=True)  # type: ignore[arg-type]
    assert "chain" not in store.get(run_id, live=False)  # type: ignore[operator]


def test_a_step_whose_post_has_no_recorded_answer_shows_so(redis_server: RedisServer) -> None:
    # The POST went out (its bound noted) and its answer never reached the ledger: a worker or Redis lost
    # while it was in flight. The run says so instead of a bare "running" with no action.
    from workflows.progress import render_run

    store = _store(redis_server)
    run_id = _run(store)
    step_key = f"{run_id}-0"
    assert store.get(run_id)["steps"][0]["status"] == "pending"  # type: ignore[index]
    store.ledger.mark_posting(step_key, 41)
    step = store.get(run_id)["steps"][0]  # type: ignore[index]
    assert (step["status"], step.get("posted"), step.get("action_id")) == ("running", True, None)
    assert "posted, its answer not recorded yet" in render_run(store.get(run_id))[1]  # type: ignore[arg-type]
    store.ledger.record_action(step_key, 42, {})
    step = store.get(run_id)["steps"][0]  # type: ignore[index]
    assert step["action_id"] == 42 and "posted" not in step
    assert "posted" not in render_run(store.get(run_id))[1]  # type: ignore[arg-type]

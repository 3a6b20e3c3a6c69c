"""JobStore's narrow reads agree with ``get``: ``brief`` (one server's outcome) and ``state``; a record that
is missing is refused naming every reason it can be."""

from __future__ import annotations

import uuid

import pytest

from workflows.job_store import JobStore

from ..support.processes import RedisServer


def test_brief_is_get_narrowed_to_one_servers_outcome(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix=f"js{uuid.uuid4().hex[:6]}", clock=lambda: 5.0)
    servers = [{"id": i, "name": f"s{i}"} for i in (1, 2, 3)]
    store.create({"id": "j1", "created": 1.0, "servers": servers, "health": None, "window": {"ends_at": 9}})
    store.set_outcome("j1", 1, outcome="running", run_id="r1")
    store.set_outcome("j1", 2, outcome="succeeded", run_id="r2")
    store.note_told("j1", "started", "why")
    full, brief = store.get("j1"), store.brief("j1", 2)
    assert full is not None and brief is not None
    assert brief["outcomes"] == {2: full["outcomes"][2]}
    assert {k: brief[k] for k in ("servers", "state", "window", "health")} == {
        k: full[k] for k in ("servers", "state", "window", "health")
    }
    assert full["told"] == ["started"] and full["reason"] == "why"
    assert full["counts"] == {"running": 1, "succeeded": 1, "pending": 1}
    assert store.brief("j1", 3)["outcomes"] == {}  # type: ignore[index]
    assert store.state("j1") == "running"
    store.set_state("j1", "cancelled")
    assert store.brief("j1", 1)["state"] == "cancelled"  # type: ignore[index]
    assert store.state("j1") == "cancelled"
    assert store.brief("no-such-job", 1) is None and store.state("no-such-job") is None


def test_tally_counts_outcomes_as_get_does(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix=f"js{uuid.uuid4().hex[:6]}")
    store.create({"id": "j2", "created": 1.0, "servers": [{"id": i} for i in range(1, 6)]})
    assert store.tally("j2") == ("running", {})
    for sid, outcome in [(1, "running"), (2, "succeeded"), (3, "running"), (4, "failed")]:
        store.set_outcome("j2", sid, outcome=outcome, run_id=f"r{sid}")
    store.set_outcome("j2", 3, ended=2.0)  # merged into the entry: still one server running
    store.note_told("j2", "started", None)
    full = store.get("j2")
    assert full is not None
    state, counts = store.tally("j2")  # type: ignore[misc]
    assert {**counts, "pending": 5 - sum(counts.values())} == full["counts"]
    assert state == "running" and counts == {"running": 2, "succeeded": 1, "failed": 1}
    store.set_state("j2", "cancelled")
    assert store.tally("j2") == ("cancelled", counts)
    assert store.tally("no-such-job") is None


def test_a_run_or_job_redis_has_no_record_of_names_every_reason(redis_server: RedisServer) -> None:
    """After a Redis restart without its data, "unknown" alone sent people looking for a typo."""
    from workers.errors import NotFound
    from workers.run_store import RunStore
    from workflows.api import Jobs, Runs

    prefix = f"js{uuid.uuid4().hex[:6]}"
    runs = Runs(None, RunStore(redis_server.client(), prefix=prefix))  # type: ignore[arg-type]
    jobs = Jobs(None, JobStore(redis_server.client(), prefix=prefix))  # type: ignore[arg-type]
    for ask, kind in ((runs.status, "run"), (runs.cancel, "run"), (jobs.status, "fleet job")):
        with pytest.raises(NotFound) as caught:
            ask("gone1")
        said = str(caught.value)
        assert said.startswith(f"no {kind} 'gone1' (") and "lost with Redis's data" in said
        assert caught.value.field in ("run_id", "job_id")


def test_one_projects_jobs_are_listed_from_past_other_projects_newer_ones(redis_server: RedisServer) -> None:
    """A reviewer: `job list --project` filtered the newest 50 jobs, HTTP the newest 5000: with 50 newer jobs
    of another project the CLI said "no fleet jobs" where HTTP listed them."""
    store = JobStore(redis_server.client(), prefix=f"js{uuid.uuid4().hex[:6]}")
    for n in range(130):
        project = "staging" if n < 3 else ("default" if n % 2 else None)  # None: from before projects
        store.create(
            {"id": f"j{n:03d}", "project": project, "created": float(n), "servers": [], "outcomes": {}}
        )
    assert [j["id"] for j in store.list(50, "staging")] == ["j002", "j001", "j000"]
    assert [j["id"] for j in store.list(2, "staging")] == ["j002", "j001"]
    assert len(store.list(200, "default")) == 127 and len(store.list(10)) == 10

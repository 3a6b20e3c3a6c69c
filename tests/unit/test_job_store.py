"""JobStore's narrow reads agree with ``get``: ``brief`` (one server's outcome) and ``state``."""

from __future__ import annotations

import uuid

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

"""The fleet runner's advance step with its collaborators replaced: budget holds, busy servers, refusals."""

from __future__ import annotations

from typing import Any

from workers.errors import BadInput, RateBudgetExhausted, ServerBusy
from workflows.fleet import FleetRunner, JobStore

from ..support import RedisServer


def job(store: JobStore, job_id: str, ids: list[int], window: int = 2) -> None:
    store.create(
        {
            "id": job_id,
            "workflow": "reboot",
            "selector": None,
            "params": {},
            "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}"} for i in ids],
            "max_concurrency": window,
            "max_errors": 0,
            "canary": 0,
            "limits": {},
            "window": None,
        }
    )


def test_an_empty_budget_defers_the_start_instead_of_failing_the_server(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix="fr1")
    kicks: list[tuple[str, float]] = []
    answers: list[Any] = [RateBudgetExhausted(12.0)]

    def submit(**kw: Any) -> dict[str, Any]:
        if answers:
            raise answers.pop()
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(store, None, submit, lambda run_id: None, kick=lambda j, c: kicks.append((j, c)))  # type: ignore[arg-type]
    job(store, "j1", [1, 2, 3])
    runner.advance("j1")
    assert kicks == [("j1", 12.0)]
    assert store.get("j1")["outcomes"] == {}, "nothing recorded: the servers are still pending"  # type: ignore[index]
    runner.advance("j1")  # the kick arrives
    outcomes = store.get("j1")["outcomes"]  # type: ignore[index]
    assert {s: e["outcome"] for s, e in outcomes.items()} == {1: "running", 2: "running"}


def test_busy_servers_are_skipped_and_refusals_count_as_errors(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix="fr2")

    def submit(**kw: Any) -> dict[str, Any]:
        if kw["server"] == 1:
            raise ServerBusy(1, "other-run")
        if kw["server"] == 2:
            raise BadInput("server 2 is protected against rebuild")
        return {"run_id": "r3"}

    runner = FleetRunner(store, None, submit, lambda run_id: None)  # type: ignore[arg-type]
    job(store, "j2", [1, 2, 3, 4, 5], window=4)
    runner.advance("j2")
    done = store.get("j2")
    assert done is not None
    assert done["outcomes"][1]["outcome"] == "skipped" and done["outcomes"][1]["busy_with"] == "other-run"
    assert done["outcomes"][2]["outcome"] == "refused"
    assert done["outcomes"][3]["outcome"] == done["outcomes"][4]["outcome"] == "running"  # the same wave
    assert 5 not in done["outcomes"], "one error exceeds --max-errors 0: server 5 never starts"
    assert done["state"] == "running", "until the runs in flight have ended and been recorded"

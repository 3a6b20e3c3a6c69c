"""Load-balancer drain: memberships and health (pure), and a cancelled job that puts its servers back."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import APIError, BadInput
from workflows.drain import Drainer, memberships, refuse_selector_targets, target_health
from workflows.fleet import FleetRunner, JobStore

from ..support.clock import Clock
from ..support.processes import RedisServer


def lb(
    lb_id: int, name: str, direct: list[int], selector: str | None = None, members: Any = ()
) -> dict[str, Any]:
    targets: list[dict[str, Any]] = [
        {"type": "server", "server": {"id": s}, "health_status": [{"listen_port": 80, "status": "healthy"}]}
        for s in direct
    ]
    if selector:
        targets.append(
            {"type": "label_selector", "label_selector": {"selector": selector},
             "targets": [{"type": "server", "server": {"id": s}} for s in members]}
        )  # fmt: skip
    return {"id": lb_id, "name": name, "targets": targets}


def test_memberships_and_refusal_of_selector_targets() -> None:
    found = memberships([lb(1, "web", [1, 2]), lb(2, "api", [2], "role=api", [3])], {1, 2, 3, 4})
    assert [m["name"] for m in found[2]] == ["web", "api"] and 4 not in found
    assert found[3] == [{"lb": 2, "name": "api", "via": "label_selector", "selector": "role=api"}]
    refuse_selector_targets({k: v for k, v in found.items() if k != 3}, {})
    with pytest.raises(BadInput, match=r"srv-3 is a target of load balancer api through the label selector"):
        refuse_selector_targets(found, {3: "srv-3"})


def test_target_health_needs_every_port() -> None:
    one = lb(1, "web", [7])
    assert target_health(one, 7) == (True, "healthy on every port")
    one["targets"][0]["health_status"] = [
        {"listen_port": 80, "status": "healthy"},
        {"listen_port": 443, "status": "unknown"},
    ]
    assert target_health(one, 7) == (False, "web: port 443 unknown")
    assert target_health(one, 8) == (False, "web: not a target (yet)")


class Client:
    """The load-balancer calls of a drain; "already" answers for a target already out or in."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.targets = {1: {10, 11}}

    def load_balancer_target(self, lb_id: int, verb: str, server_id: int) -> dict[str, Any]:
        self.calls.append((verb, lb_id, server_id))
        present = server_id in self.targets[lb_id]
        if verb == "remove_target" and not present:
            raise APIError("load_balancer_target_not_found", "not a target", 422)
        if verb == "add_target" and present:
            raise APIError("target_already_defined", "already", 422)
        (self.targets[lb_id].discard if verb == "remove_target" else self.targets[lb_id].add)(server_id)
        return {"id": len(self.calls), "status": "success"}

    def get_actions(self, ids: list[int]) -> list[dict[str, Any]]:
        return [{"id": i, "status": "success"} for i in ids]


def test_sending_again_is_safe() -> None:
    client = Client()
    drainer = Drainer(client)  # type: ignore[arg-type]
    assert len(drainer.send("remove_target", [1], 10)) == 1
    assert drainer.send("remove_target", [1], 10) == [], "already out: done, nothing new"
    assert len(drainer.send("add_target", [1], 10)) == 1
    assert drainer.send("add_target", [1], 10) == []


def test_a_cancelled_job_puts_a_drained_server_back_at_once(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix="dr1")
    client = Client()
    runner = FleetRunner(
        store, client, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda job_id, delay: None, fresh_for=0,
    )  # fmt: skip
    store.create(
        {
            "id": "j1", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": 10, "name": "a", "lbs": [1]}, {"id": 11, "name": "b", "lbs": [1]}],
            "max_concurrency": 1, "max_errors": 0, "canary": 0, "limits": {}, "window": None, "drain": True,
        }
    )  # fmt: skip
    runner.advance("j1")
    assert client.calls == [("remove_target", 1, 10)] and client.targets[1] == {11}
    assert store.get("j1")["outcomes"][10]["drain"]["state"] == "out"  # type: ignore[index]
    runner.cancel("j1", "ops")
    runner.on_run_ended({"id": "run-10", "job_id": "j1", "server_id": 10, "state": "cancelled"})
    assert client.targets[1] == {10, 11}, "back in its load balancer though the job was cancelled"
    entry = store.get("j1")["outcomes"][10]  # type: ignore[index]
    assert entry["outcome"] == "cancelled" and "put back into its load balancers" in entry["reason"]


def test_a_slow_remove_target_is_waited_for_before_the_run_starts(redis_server: RedisServer) -> None:
    """The real API's target actions take a moment (fakecloud's end at once): the run waits for them."""
    store = JobStore(redis_server.client(), prefix="dr2")
    client = Client()
    status = ["running"]
    client.get_actions = lambda ids: [{"id": i, "status": status[0]} for i in ids]  # type: ignore[method-assign]
    original = client.load_balancer_target
    client.load_balancer_target = lambda *a: {**original(*a), "status": "running"}  # type: ignore[method-assign]
    started: list[int] = []
    kicks: list[float] = []
    runner = FleetRunner(
        store, client, lambda **kw: started.append(kw["server"]) or {"run_id": "r"},  # type: ignore[arg-type]
        lambda run_id, by: None, kick=lambda job_id, delay: kicks.append(delay), fresh_for=0,
    )  # fmt: skip
    store.create(
        {
            "id": "j2", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": 10, "name": "a", "lbs": [1]}], "max_concurrency": 1, "max_errors": 0,
            "canary": 0, "limits": {}, "window": None, "drain": True,
        }
    )  # fmt: skip
    runner.advance("j2")
    assert started == [] and kicks, "removed, but its action still runs: no run yet, a look later"
    assert store.get("j2")["outcomes"][10]["drain"]["state"] == "draining"  # type: ignore[index]
    status[0] = "success"
    runner.advance("j2")
    assert started == [10] and client.calls == [("remove_target", 1, 10)], "sent once, then waited for"


@pytest.mark.parametrize(
    ("status", "healthy", "waits"),
    [("off", False, False), ("running", False, True), ("starting", False, True), ("running", True, False)],
)
def test_a_server_left_off_is_put_back_without_waiting_for_a_health_it_cannot_reach(
    redis_server: RedisServer, status: str, healthy: bool, waits: bool
) -> None:
    """An outside test: a server that was off before the job went back into its load balancer and held a slot
    of the job for the 5-minute health wait, which it could never pass. One healthy at once ends the job then
    (that run's end had left the deciding to a kick that nothing sent)."""
    store = JobStore(redis_server.client(), prefix=f"dr3{status}{healthy}")
    client = Client()
    client.get_load_balancer = lambda lb_id: lb(lb_id, "web", [10] if healthy else [])  # type: ignore[attr-defined]
    client.get_server = lambda sid: {"id": sid, "status": status}  # type: ignore[attr-defined]
    client.targets[1] = {11}
    runner = FleetRunner(
        store, client, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda job_id, delay: None, fresh_for=0,
    )  # fmt: skip
    store.create(
        {
            "id": "j3", "workflow": "snapshot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": 10, "name": "a", "lbs": [1]}], "max_concurrency": 1, "max_errors": 0,
            "canary": 0, "limits": {}, "window": None, "drain": True,
        }
    )  # fmt: skip
    runner.advance("j3")
    runner.on_run_ended({"id": "run-10", "job_id": "j3", "server_id": 10, "state": "succeeded"})
    entry = store.get("j3")["outcomes"][10]  # type: ignore[index]
    assert 10 in client.targets[1], "back in its load balancer"
    if waits:
        assert entry["outcome"] == "running" and entry["drain"]["state"] == "restoring", entry
    else:
        assert entry["outcome"] == "succeeded", entry
        if not healthy:
            assert entry["reason"] == "back in its load balancers, not waited for healthy: the server is off"
        assert store.state("j3") == "succeeded"


def test_a_drained_servers_start_that_met_an_api_outage_is_tried_again_not_left_out(
    redis_server: RedisServer,
) -> None:
    """A reviewer: a drained server whose start met a 502 stayed out of its load balancer with no run, and
    the job never ended. It is started again from its retry time, still out; it is never drained twice."""
    from workflows.fleet import START_RETRY_PAUSE

    clock = Clock()
    store = JobStore(redis_server.client(), prefix="dr4", clock=clock)
    client = Client()
    answers: list[Any] = [APIError("http_502", "GET /servers/10: Bad Gateway", 502)]
    started: list[int] = []
    kicks: list[float] = []

    def submit(**kw: Any) -> dict[str, Any]:
        if answers:
            raise answers.pop()
        started.append(kw["server"])
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(
        store, client, submit, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda job_id, delay: kicks.append(delay), fresh_for=0,
    )  # fmt: skip
    store.create(
        {
            "id": "j4", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": 10, "name": "a", "lbs": [1]}], "max_concurrency": 1, "max_errors": 0,
            "canary": 0, "limits": {}, "window": None, "drain": True,
        }
    )  # fmt: skip
    runner.advance("j4")
    assert started == [] and client.targets[1] == {11}, "taken out; its start met the outage"
    runner.advance("j4")
    assert started == [], "not before its retry time"
    clock.now += START_RETRY_PAUSE
    runner.advance("j4")
    assert started == [10], "started again, from where its drain was"
    assert client.calls == [("remove_target", 1, 10)], "taken out once"
    assert store.get("j4")["outcomes"][10]["run_id"] == "run-10"  # type: ignore[index]

    # The same for a start that met an empty rate budget (its kick is the budget's wait).
    from workers.errors import RateBudgetExhausted

    answers[:] = [RateBudgetExhausted(7.0)]
    store.create(
        {
            "id": "j5", "workflow": "reboot", "selector": None, "params": {}, "created": 0.0,
            "servers": [{"id": 11, "name": "b", "lbs": [1]}], "max_concurrency": 1, "max_errors": 0,
            "canary": 0, "limits": {}, "window": None, "drain": True,
        }
    )  # fmt: skip
    runner.advance("j5")
    assert kicks[-1] == 7.0 and 11 not in started and 11 not in client.targets[1]
    runner.advance("j5")  # the kick
    assert started[-1] == 11 and client.calls.count(("remove_target", 1, 11)) == 1

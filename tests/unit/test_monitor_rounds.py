"""A round's endings carried out together; a monitor quiet while another process's round runs."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import pytest

from workers.engine import Engine
from workers.ledger import Ledger
from workers.monitor import Monitor
from workers.wait_state import Phase, Wait
from workers.waits import WaitStore

from ..support.processes import RedisServer


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dispatcher:
    """Records resends; refuses the ones it is told to, and notes how many ran at once."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.sent: list[str] = []
        self.threads: set[threading.Thread] = set()
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def resend(self, request: dict[str, Any]) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.current_thread())
        time.sleep(0.02)  # a broker round trip
        with self.lock:
            self.active -= 1
            if request["id"] in self.refuse:
                raise ConnectionError(f"broker away for {request['id']}")
            self.sent.append(request["id"])


def monitor_on(redis_server: RedisServer, dispatcher: Any, clock: Clock) -> tuple[Monitor, WaitStore]:
    r = redis_server.client()
    prefix = f"m{uuid.uuid4().hex[:8]}"
    waits = WaitStore(r, prefix=prefix)
    engine = Engine(client=None, redis=r, ledger=Ledger(r, prefix=prefix), waits=waits, clock=clock)  # type: ignore[arg-type]
    return Monitor(engine, dispatcher, prefix=prefix, enders=4), waits


def wait(i: int) -> Wait:
    return Wait(
        id=f"w{i}",
        action="reset",
        step="reset",
        server_id=i,
        phase=Phase.LATER,
        started=1000.0,
        deadline=2000.0,
        next=1000.0,
        request={"id": f"w{i}"},
    )


def test_a_rounds_endings_run_together_and_one_failure_stops_none_of_the_others(
    redis_server: RedisServer,
) -> None:
    dispatcher = Dispatcher(refuse={"w3"})
    monitor, waits = monitor_on(redis_server, dispatcher, Clock())
    for i in range(10):
        waits.park(wait(i))  # parked for later, due now: each round sends it again
    with pytest.raises(ConnectionError, match="w3"):
        monitor.run_round()
    assert sorted(dispatcher.sent) == sorted(f"w{i}" for i in range(10) if i != 3)
    assert 1 < dispatcher.peak <= 4, "several at once, never more than the enders"
    assert waits.get("w3") is not None, "the one whose send failed stays parked, to be tried again"
    assert all(waits.get(f"w{i}") is None for i in range(10) if i != 3)


def test_rounds_end_their_waits_on_the_same_threads(redis_server: RedisServer) -> None:
    """Each round made its own pool: every thread built its own Celery result backend and connected it to
    Redis again, eight times a round."""
    clock = Clock()
    dispatcher = Dispatcher(set())
    monitor, waits = monitor_on(redis_server, dispatcher, clock)
    for n in range(3):
        for i in range(8):
            waits.park(wait(10 * n + i))
        clock.now += 1.0  # past the gap between rounds
        report = monitor.run_round()
        assert report is not None and report.resent == 8
    assert len(dispatcher.sent) == 24
    assert 1 < len(dispatcher.threads) <= 4, "the round's enders, kept from one round to the next"


def test_a_monitor_that_finds_a_round_just_begun_elsewhere_waits_for_its_gap(
    redis_server: RedisServer,
) -> None:
    """It used to ask Redis again every 10 ms until the other round's gap had passed."""
    clock = Clock()
    first, waits = monitor_on(redis_server, Dispatcher(set()), clock)
    second = Monitor(first.engine, first.dispatcher, prefix=first.lock_key.split(":")[0], enders=4)
    waits.park(wait(1))
    assert first.run_round() is not None  # sends w1 again
    waits.park(wait(2))
    clock.now += 0.1
    assert second.run_round() is None, "the gap since the first round has not passed"
    assert second._not_before == pytest.approx(1000.0 + first.gap)


def test_rounds_space_out_while_the_rate_budget_is_scarce(redis_server: RedisServer) -> None:
    """Scarce budget: every request waits for refill, so fewer rounds carry more ids each."""
    from workers.monitor import SCARCE_GAP_CAP, SCARCE_ROUNDS_PER_REFILL
    from workers.rate_budget import RateBudget

    r = redis_server.client()
    budget = RateBudget(r, f"b{uuid.uuid4().hex[:8]}", default_limit=3600, refill_per_second=0.0)
    monitor, _ = monitor_on(redis_server, Dispatcher(set()), Clock())
    monitor.engine.client = type("C", (), {"budget": budget})()  # type: ignore[assignment]
    r.hset(budget.key, mapping={"tokens": 3000, "limit": 3600})
    assert monitor._gap() == monitor.gap, "plenty left: the usual pace"
    r.hset(budget.key, mapping={"tokens": 400})  # above the 10% bulk floor, below floor + 5%
    assert monitor._gap() == min(SCARCE_GAP_CAP, SCARCE_ROUNDS_PER_REFILL / 1.0), "1 request a second"
    fast = RateBudget(r, budget.key, default_limit=3600, refill_per_second=40.0)
    monitor.engine.client = type("C", (), {"budget": fast})()  # type: ignore[assignment]
    assert monitor._gap() == max(monitor.gap, SCARCE_ROUNDS_PER_REFILL / 40.0)


class Actions:
    """Server actions behind the two reads the monitor may make; one id is missing from the list read."""

    def __init__(self, hidden: set[int]) -> None:
        self.hidden = hidden
        self.calls: list[tuple[str, list[int]]] = []

    def retry_within(self, seconds: float) -> Any:
        return contextlib.nullcontext()

    def get_server_actions(self, ids: list[int]) -> list[dict[str, Any]]:
        self.calls.append(("/servers/actions", ids))
        return [{"id": i, "status": "running"} for i in ids if i not in self.hidden]

    def get_actions(self, ids: list[int]) -> list[dict[str, Any]]:
        self.calls.append(("/actions", ids))
        return [{"id": i, "status": "success"} for i in ids if i != 999]


def test_actions_are_read_from_the_server_list_and_a_missing_one_is_asked_again_before_it_is_gone(
    redis_server: RedisServer,
) -> None:
    from workers.monitor import RoundReport

    monitor, waits = monitor_on(redis_server, Dispatcher(set()), Clock())
    monitor.engine.client = Actions(hidden={7, 999})  # type: ignore[assignment]
    due = [Wait(**{**wait(i).__dict__, "phase": Phase.ACTION, "action_id": i}) for i in (5, 7, 999)]
    later = Wait(**{**wait(6).__dict__, "phase": Phase.ACTION, "action_id": 6, "next": 1500.0})
    waits.park(later)  # not due yet: it rides along in the same request at no cost
    report = RoundReport()
    seen, topped = monitor._observe_actions(due, 1000.0, report)
    assert [w.id for w in topped] == ["w6"]
    assert monitor.engine.client.calls == [("/servers/actions", [5, 6, 7, 999]), ("/actions", [7, 999])]
    assert report.requests == 2
    assert seen is not None
    assert seen["w5"].action["status"] == "running" and seen["w6"].action is not None
    assert seen["w7"].action["status"] == "success", "found by the second read, not taken for gone"
    assert seen["w999"].action_gone, "missing from both reads: gone"


class Unreachable:
    """An API this worker cannot reach (a bad proxy): every read fails as the client reports it."""

    def __init__(self) -> None:
        self.calls = 0

    def retry_within(self, seconds: float) -> Any:
        return contextlib.nullcontext()

    def get_server_actions(self, ids: list[int]) -> list[dict[str, Any]]:
        from workers.errors import TransportError

        self.calls += 1
        raise TransportError("ProxyError: no proxy there", "GET", "/servers/actions", maybe_sent=False)


def test_a_monitor_that_cannot_reach_the_api_leaves_the_waits_due_and_the_rounds_to_others(
    redis_server: RedisServer,
) -> None:
    """A worker with a broken proxy used to re-park every wait it failed to look at (pushing its next poll
    back by the wait's backoff, 14 s in the report) and to keep taking the round lock."""
    clock = Clock()
    broken, waits = monitor_on(redis_server, Dispatcher(set()), clock)
    broken.engine.client = Unreachable()  # type: ignore[assignment]
    for i in (1, 2):
        waits.park(Wait(**{**wait(i).__dict__, "phase": Phase.ACTION, "action_id": 100 + i}))
    report = broken.run_round()
    assert report is not None and report.errors and broken.engine.client.calls == 1
    assert waits.due(clock.now) == ["w1", "w2"], "not looked at: still due, at the time they had"
    clock.now += 0.5
    assert broken.run_round() is None, "it leaves the next rounds to the others for a while"
    assert broken.engine.client.calls == 1
    engine = Engine(
        client=Actions(hidden=set()),  # type: ignore[arg-type]
        redis=broken.engine.redis,
        ledger=broken.engine.ledger,
        waits=waits,
        clock=clock,
    )
    healthy = Monitor(engine, broken.dispatcher, prefix=broken.lock_key.split(":")[0], enders=2)
    assert healthy.run_round() is not None
    assert engine.client.calls == [("/servers/actions", [101, 102])]  # type: ignore[attr-defined]
    assert waits.due(clock.now) == [], "looked at by the healthy monitor and parked for their next poll"


def test_a_round_short_of_budget_is_not_taken_for_an_unreachable_api(redis_server: RedisServer) -> None:
    """Rounds already space out while the budget is scarce; backing off more would only slow the job."""
    from workers.errors import RateBudgetExhausted

    class Spent(Unreachable):
        def get_server_actions(self, ids: list[int]) -> list[dict[str, Any]]:
            self.calls += 1
            raise RateBudgetExhausted(2.0)

    clock = Clock()
    monitor, waits = monitor_on(redis_server, Dispatcher(set()), clock)
    monitor.engine.client = Spent()  # type: ignore[assignment]
    waits.park(Wait(**{**wait(1).__dict__, "phase": Phase.ACTION, "action_id": 101}))
    report = monitor.run_round()
    assert report is not None and report.errors and not report.unreachable
    assert waits.due(clock.now) == ["w1"], "not looked at: still due"
    clock.now += 0.5
    assert monitor.run_round() is not None and monitor.engine.client.calls == 2  # type: ignore[attr-defined]

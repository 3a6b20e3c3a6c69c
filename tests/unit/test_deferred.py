"""Deferred sends: kept in Redis until due, sent by a monitor round, the same entry kept once."""

from __future__ import annotations

import uuid
from typing import Any

from workers.deferred import Deferred
from workers.engine import Engine
from workers.ledger import Ledger
from workers.monitor import Monitor
from workers.waits import WaitStore

from ..support.processes import RedisServer


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor_on(
    redis_server: RedisServer, clock: Clock, sent: list[Any], gap: float = 0.5
) -> tuple[Monitor, Deferred]:
    """Return a monitor (no API client: only deferred sends happen) and the deferred store it sends from."""
    r = redis_server.client()
    prefix = f"d{uuid.uuid4().hex[:8]}"
    engine = Engine(
        client=None,  # type: ignore[arg-type]
        redis=r,
        ledger=Ledger(r, prefix=prefix),
        waits=WaitStore(r, prefix=prefix),
        clock=clock,
    )
    send = lambda t, k: sent.append((t, k))  # noqa: E731 - a one-line recorder
    monitor = Monitor(engine, dispatcher=None, prefix=prefix, send=send, gap=gap)  # type: ignore[arg-type]
    return monitor, Deferred(r, prefix=prefix)


def test_a_deferred_send_waits_for_its_time_and_goes_out_once(redis_server: RedisServer) -> None:
    clock = Clock()
    sent: list[tuple[str, dict[str, Any]]] = []
    monitor, deferred = monitor_on(redis_server, clock, sent)
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1010.0, clock.now)
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1005.0, clock.now)  # the same: sooner wins
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1020.0, clock.now)  # later never delays it
    assert deferred.next_due() == 1005.0
    monitor.run_round()
    assert sent == []
    clock.now = 1005.0
    monitor.run_round()
    assert sent == [("hcloud_flow.fleet_advance", {"job_id": "j1"})]
    monitor.run_round()
    assert len(sent) == 1 and deferred.next_due() is None


def test_rounds_gather_what_falls_due_close_together(redis_server: RedisServer) -> None:
    # A round that began a moment ago (in any process) holds the next one back for the gap, so that one
    # request carries what fell due meanwhile.
    clock = Clock()
    sent: list[tuple[str, dict[str, Any]]] = []
    monitor, deferred = monitor_on(redis_server, clock, sent, gap=0.5)
    deferred.later("a", {}, 1000.0, clock.now)
    assert monitor.run_round() is not None and [t for t, _ in sent] == ["a"]
    deferred.later("b", {}, 1000.1, clock.now)
    clock.now = 1000.2
    assert monitor.run_round() is None and [t for t, _ in sent] == ["a"], "within the gap: no round"
    clock.now = 1000.5
    assert monitor.run_round() is not None and [t for t, _ in sent] == ["a", "b"]


def test_an_ask_made_by_the_send_itself_is_not_forgotten_with_the_entry(redis_server: RedisServer) -> None:
    """A reviewer: the round sends a due fleet advance, the advance asks for its next one in 30 s, and the
    round then forgets the entry, and the ask with it (an earlier entry was never moved later). A job
    waiting on that ask (a start's retry, a health look) waited for good."""
    clock = Clock()
    prefix = f"d{uuid.uuid4().hex[:8]}"
    deferred = Deferred(redis_server.client(), prefix=prefix)
    sent: list[tuple[str, dict[str, Any]]] = []

    def send(task: str, kwargs: dict[str, Any]) -> None:
        sent.append((task, kwargs))
        deferred.later(task, kwargs, clock.now + 30.0, clock.now)  # what the sent advance does at once

    monitor, _ = monitor_on(redis_server, clock, [])
    monitor.send, monitor.deferred = send, deferred
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1000.0, clock.now)
    monitor.run_round()
    assert len(sent) == 1
    assert deferred.next_due() == 1030.0, "its own ask outlived the send"
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1050.0, clock.now)
    assert deferred.next_due() == 1030.0, "not yet due: the earlier time is kept"

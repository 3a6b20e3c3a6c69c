"""When the monitor polls a wait next: at the action's expected end when known, else backing off by age."""

from __future__ import annotations

from typing import Any

from workers.engine import Cadence, Engine
from workers.ledger import Ledger
from workers.monitor import Monitor
from workers.waits import WaitStore

from ..support import RedisServer


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(redis_server: RedisServer, clock: Clock) -> Monitor:
    r = redis_server.client()
    engine = Engine(
        client=None,
        redis=r,
        ledger=Ledger(r, prefix="cad"),
        waits=WaitStore(r, prefix="cad"),  # type: ignore[arg-type]
        clock=clock,
        cadence=Cadence(first=1.0, growth=1.5, cap=10.0),
    )
    return Monitor(engine, dispatcher=None, prefix="cad")  # type: ignore[arg-type]


def wait(**fields: Any) -> dict[str, Any]:
    return {
        "id": "w",
        "phase": "action",
        "started": 1000.0,
        "polls": 0,
        "progress": 0,
        "expected": None,
        "late_polls": 0,
        **fields,
    }


def test_learned_duration_sets_the_poll_at_the_expected_end(redis_server: RedisServer) -> None:
    clock = Clock()
    m = monitor(redis_server, clock)
    w = wait(expected=8.0)
    clock.now = 1001.0
    m._reschedule(w)
    assert w["next"] == 1008.0
    clock.now = 1008.0  # still running at the expected end: soon again, then backing off
    m._reschedule(w)
    assert w["next"] == 1009.0
    m._reschedule(w)
    assert w["next"] == 1009.5


def test_progress_tells_the_end_when_nothing_was_learned(redis_server: RedisServer) -> None:
    clock = Clock()
    m = monitor(redis_server, clock)
    w = wait(progress=25)
    clock.now = 1002.0  # 25% after 2 s: the end is due at 8 s
    m._reschedule(w)
    assert w["next"] == 1008.0


def test_early_batch_polls_do_not_push_the_next_poll_out(redis_server: RedisServer) -> None:
    clock = Clock()
    m = monitor(redis_server, clock)
    w = wait()
    clock.now = 1001.0
    for _ in range(10):  # polled ten times to fill batch requests, all at 1 s of age
        m._reschedule(w)
    assert w["next"] == 1002.0, "the pause follows the wait's age (1 s), not its poll count"
    clock.now = 1040.0
    m._reschedule(w)
    assert w["next"] == 1050.0, "capped"

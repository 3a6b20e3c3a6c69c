"""Deferred sends: kept in Redis until due, sent by a monitor round, the same entry kept once."""

from __future__ import annotations

import uuid
from typing import Any

from workers.deferred import Deferred
from workers.engine import Engine
from workers.ledger import Ledger
from workers.monitor import Monitor
from workers.waits import WaitStore

from ..support import RedisServer


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deferred_send_waits_for_its_time_and_goes_out_once(redis_server: RedisServer) -> None:
    r = redis_server.client()
    prefix = f"d{uuid.uuid4().hex[:8]}"
    clock = Clock()
    engine = Engine(
        client=None,  # type: ignore[arg-type]
        redis=r,
        ledger=Ledger(r, prefix=prefix),
        waits=WaitStore(r, prefix=prefix),
        clock=clock,
    )
    sent: list[tuple[str, dict[str, Any]]] = []
    monitor = Monitor(engine, dispatcher=None, prefix=prefix, send=lambda t, k: sent.append((t, k)))  # type: ignore[arg-type]
    deferred = Deferred(r, prefix=prefix)
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1010.0)
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1005.0)  # the same entry: sooner wins
    deferred.later("hcloud_flow.fleet_advance", {"job_id": "j1"}, 1020.0)  # ... and later never delays it
    assert deferred.next_due() == 1005.0
    monitor.run_round()
    assert sent == []
    clock.now = 1005.0
    monitor.run_round()
    assert sent == [("hcloud_flow.fleet_advance", {"job_id": "j1"})]
    monitor.run_round()
    assert len(sent) == 1 and deferred.next_due() is None

"""A wait for a run or a job rides out a short Redis outage, within bounds (workflows.api.wait_for_end)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from workers.errors import StillRunning
from workflows.api import REDIS_PATIENCE, wait_for_end

from ..support.clock import Clock


def reads(*answers: Any) -> Any:
    """A read that raises or returns each answer in turn (the last one for ever after)."""
    left = list(answers)

    def read() -> dict[str, Any]:
        answer = left.pop(0) if len(left) > 1 else left[0]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    return read


def test_a_redis_restart_during_a_wait_is_ridden_out() -> None:
    clock = Clock(0.0)
    down = redis.ConnectionError("Connection refused")
    read = reads({"state": "running"}, down, down, redis.TimeoutError("timed out"), {"state": "succeeded"})
    # A 3-second restart ended `--wait` with "cannot reach Redis" (exit 3) while the job went on.
    done = wait_for_end(read, "job j", None, 0.5, sleep=clock.sleep, clock=clock)
    assert done["state"] == "succeeded"


def test_a_redis_that_stays_away_ends_the_wait_after_the_patience() -> None:
    clock = Clock(0.0)
    read = reads({"state": "running"}, redis.ConnectionError("Connection refused"))
    with pytest.raises(redis.ConnectionError):
        wait_for_end(read, "job j", None, 0.5, sleep=clock.sleep, clock=clock)
    assert REDIS_PATIENCE <= clock.now <= REDIS_PATIENCE + 1.5


def test_an_outage_past_the_waits_own_deadline_ends_it_then() -> None:
    clock = Clock(0.0)
    read = reads(redis.ConnectionError("Connection refused"))
    with pytest.raises(redis.ConnectionError):
        wait_for_end(read, "run r", 5.0, 0.5, sleep=clock.sleep, clock=clock)
    assert clock.now <= 6.0
    # Reachable and still running at the deadline: the usual StillRunning.
    clock = Clock(0.0)
    with pytest.raises(StillRunning):
        wait_for_end(reads({"state": "running"}), "run r", 5.0, 0.5, sleep=clock.sleep, clock=clock)


def test_a_record_that_vanishes_during_a_wait_is_not_called_bad_input() -> None:
    """An outside test: after a Redis restart without its data, `fleet --wait` said "no fleet job" and exited
    2 (bad input) of a job whose servers were half-way through."""
    from workers.errors import BadInput, NotFound, RecordLost

    clock = Clock(0.0)
    gone = NotFound.record("fleet job", "j1", "job_id")
    with pytest.raises(
        RecordLost, match="the record of fleet job j1 is gone from Redis while we waited"
    ) as lost:
        wait_for_end(
            reads({"state": "running"}, gone), "fleet job j1", None, 1.0, sleep=clock.sleep, clock=clock
        )
    assert not isinstance(lost.value, BadInput) and "may still be under way" in str(lost.value)
    with pytest.raises(NotFound):  # never there: a wrong id is bad input, as before
        wait_for_end(reads(gone), "fleet job j1", None, 1.0, sleep=clock.sleep, clock=clock)

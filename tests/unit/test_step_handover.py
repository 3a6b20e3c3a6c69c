"""A step that hands its message over (parked, or already finished) ends its task with a shallow ``Ignore``.

Celery copies every frame of an Ignore's traceback twice (billiard's ExceptionInfo keeps each frame's code
positions) and formats it: raised where the step parked, deep in the step, that was a quarter of a worker's
CPU in a 100-server fleet job (py-spy, GIL samples). So the step signals ``_HandedOver`` and the task's
``run`` raises ``Ignore`` afresh, with only its own frame and no chained exception.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
from celery.exceptions import Ignore

from workers import tasks
from workers.errors import RateBudgetExhausted


def _park_deep(depth: int) -> None:
    if depth:
        _park_deep(depth - 1)
        return
    try:
        raise RateBudgetExhausted(1.0)  # parked while handling another exception, as budget waits are
    except RateBudgetExhausted:
        raise tasks._HandedOver() from None


def test_a_parked_step_ends_its_task_with_a_one_frame_ignore(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_action(*_: Any) -> dict[str, Any]:
        _park_deep(12)
        raise AssertionError("not reached")

    monkeypatch.setattr(tasks, "run_action", run_action)
    with pytest.raises(Ignore) as caught:
        tasks.shutdown.run(1)
    exc = caught.value
    assert exc.__context__ is None and exc.__cause__ is None
    frames = traceback.extract_tb(exc.__traceback__)
    assert [f.name for f in frames[1:]] == ["run"]  # below this test's own frame, the task's run alone


def test_a_step_that_returns_or_fails_is_not_turned_into_ignore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "run_action", lambda *_: {"server_id": 1})
    assert tasks.shutdown.run(1) == {"server_id": 1}

    def fail(*_: Any) -> dict[str, Any]:
        raise RateBudgetExhausted(5.0)

    monkeypatch.setattr(tasks, "run_action", fail)
    with pytest.raises(RateBudgetExhausted):
        tasks.shutdown.run(1)


@pytest.mark.parametrize(
    ("request_timeout", "retry_base"), [(30.0, 1.0), (600.0, 1.0), (600.0, 60.0), (1.0, 0.0)]
)
def test_a_step_waiting_on_another_deliverys_claim_looks_until_that_claim_has_lapsed(
    request_timeout: float, retry_base: float
) -> None:
    """Sixty looks three seconds apart ran out before a claim with a long request timeout lapsed (up to
    12 min at the settings' bounds): a redelivered step, whose first delivery had died holding its claim,
    failed while the action that delivery may have started ran on (an outside reading)."""
    from workers.runtime import claim_ttl_for, retry_policy_for

    # At the ends of the settings' bounds (HCLOUD_FLOW_REQUEST_TIMEOUT, HCLOUD_FLOW_RETRY_BASE).
    claim = claim_ttl_for(request_timeout, retry_policy_for(retry_base))
    assert tasks.in_progress_tries(claim) * tasks._IN_PROGRESS_RETRY > claim + 10

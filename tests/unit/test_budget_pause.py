"""How long a step short of budget stays parked: the refill wait, spread over the others' refill, capped."""

from __future__ import annotations

import pytest

from workers.tasks import _BUDGET_PAUSE_CAP, budget_pause


@pytest.mark.parametrize(
    ("wait", "rate", "waiting", "rnd", "pause"),
    [
        (2.0, 1.0, 0, 0.5, 2.0),  # alone: the refill wait the budget named
        (0.5, 6.0, 30, 0.0, 0.5),  # 30 parked at 6 a second: spread over the 5 s their tokens take ...
        (0.5, 6.0, 30, 1.0, 5.5),  # ... from the soonest to the last
        (0.0, 6.0, 0, 0.0, 0.2),  # never a busy loop
        (1.0, None, 50, 1.0, 1.0),  # refill rate unknown: no spread
        (1.0, 1.0, 500, 1.0, _BUDGET_PAUSE_CAP),  # capped: a parked step looks again within the cap
    ],
)
def test_budget_pause(wait: float, rate: float | None, waiting: int, rnd: float, pause: float) -> None:
    assert budget_pause(wait, rate, waiting, rnd) == pytest.approx(pause)

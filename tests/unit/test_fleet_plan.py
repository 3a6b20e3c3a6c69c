"""Fleet job rules: the sliding window, canary, error threshold, cutoff, and amounts."""

from __future__ import annotations

import pytest

from workers.errors import BadInput
from workflows.fleet_plan import decide, parse_amount

ORDER = list(range(1, 11))


def test_sliding_window_starts_the_next_as_soon_as_one_ends() -> None:
    d = decide(ORDER, {}, window=3, max_errors=0, canary=0)
    assert d.start == (1, 2, 3)
    d = decide(ORDER, {1: "succeeded", 2: "running", 3: "running"}, window=3, max_errors=0, canary=0)
    assert d.start == (4,)


def test_canary_runs_alone_then_the_rest() -> None:
    assert decide(ORDER, {}, window=5, max_errors=9, canary=2).start == (1, 2)
    assert decide(ORDER, {1: "succeeded", 2: "running"}, window=5, max_errors=9, canary=2).start == ()
    both = {1: "succeeded", 2: "succeeded"}
    assert decide(ORDER, both, window=5, max_errors=9, canary=2).start == (3, 4, 5, 6, 7)


def test_canary_failure_fails_the_job_even_under_the_threshold() -> None:
    d = decide(ORDER, {1: "succeeded", 2: "failed"}, window=5, max_errors=9, canary=2)
    assert (d.start, d.state, d.reason) == ((), "failed", "a canary failed")
    assert d.not_started == tuple(range(3, 11))


def test_skipped_busy_servers_are_not_canaries_and_not_errors() -> None:
    d = decide(ORDER, {1: "skipped"}, window=5, max_errors=0, canary=2)
    assert d.start == (2, 3)


def test_threshold_stops_new_starts_and_in_flight_runs_finish() -> None:
    outcomes = {1: "failed", 2: "failed", 3: "running", 4: "running"}
    d = decide(ORDER, outcomes, window=4, max_errors=1, canary=0)
    assert (d.start, d.state) == ((), "running")
    d = decide(ORDER, {**outcomes, 3: "failed", 4: "succeeded"}, window=4, max_errors=1, canary=0)
    assert (d.state, d.not_started) == ("failed", tuple(range(5, 11)))


def test_errors_at_the_threshold_do_not_stop_the_job() -> None:
    d = decide(ORDER, {1: "failed"}, window=2, max_errors=1, canary=0)
    assert d.start == (2, 3)


def test_cutoff_stops_new_starts_and_the_job_says_not_all_ran() -> None:
    d = decide(ORDER, {1: "succeeded"}, window=2, max_errors=0, canary=0, cutoff_passed=True)
    assert (d.start, d.state, d.not_started) == ((), "completed_with_failures", tuple(range(2, 11)))


def test_all_done() -> None:
    done = {s: "succeeded" for s in ORDER}
    assert decide(ORDER, done, window=3, max_errors=0, canary=0).state == "succeeded"
    assert decide(ORDER, {**done, 5: "refused"}, window=3, max_errors=0, canary=0).state == "failed"
    # Within the threshold, a job with a failed, refused or busy server did not succeed: it says so.
    for outcome in ("failed", "refused", "skipped"):
        d = decide(ORDER, {**done, 5: outcome}, window=3, max_errors=1, canary=0)
        assert d.state == "completed_with_failures", outcome


@pytest.mark.parametrize(
    ("text", "total", "want"), [("5", 30, 5), ("20%", 30, 6), ("1%", 30, 1), ("100%", 7, 7)]
)
def test_amounts(text: str, total: int, want: int) -> None:
    assert parse_amount(text, "max_concurrency", minimum=1).of(total, at_least=1) == want


@pytest.mark.parametrize("text", ["0", "-1", "abc", "150%", "0%", "2.5", "", "1e3", "٣"])
def test_bad_concurrency_is_refused(text: str) -> None:
    with pytest.raises(BadInput, match="max_concurrency"):
        parse_amount(text, "max_concurrency", minimum=1)


def test_zero_errors_is_allowed() -> None:
    assert parse_amount("0", "max_errors", minimum=0).of(10) == 0
    assert parse_amount("0%", "max_errors", minimum=0).of(10) == 0


def test_spread_limits_hold_back_a_busy_place_and_let_others_fill_the_window() -> None:
    from workflows.fleet_plan import Spread

    # Servers 1-4 in placement group 7, 5-6 in none; 1-2 and 5 in fsn1, the rest in nbg1.
    spread = Spread(
        group_of={1: 7, 2: 7, 3: 7, 4: 7, 5: None, 6: None},
        location_of={1: "fsn1", 2: "fsn1", 3: "nbg1", 4: "nbg1", 5: "fsn1", 6: "nbg1"},
        max_per_group=1,
    )
    order = [1, 2, 3, 4, 5, 6]
    assert decide(order, {}, window=4, max_errors=0, canary=0, spread=spread).start == (1, 5, 6)
    assert decide(order, {1: "running"}, window=4, max_errors=0, canary=0, spread=spread).start == (5, 6)
    after = decide(order, {1: "succeeded", 5: "running"}, window=4, max_errors=0, canary=0, spread=spread)
    assert after.start == (2, 6)
    by_place = Spread(spread.group_of, spread.location_of, max_per_group=2, max_per_location=1)
    assert decide(order, {}, window=6, max_errors=0, canary=0, spread=by_place).start == (1, 3)
    done = {s: "succeeded" for s in order}
    assert decide(order, done, window=6, max_errors=0, canary=0, spread=by_place).state == "succeeded"


def test_spread_limits_never_stall_a_job_with_nothing_in_flight() -> None:
    from workflows.fleet_plan import Spread

    spread = Spread({1: 1, 2: 1, 3: 1}, {1: "a", 2: "a", 3: "a"}, max_per_group=1, max_per_location=1)
    outcomes: dict[int, str] = {}
    for _ in range(3):
        d = decide([1, 2, 3], outcomes, window=3, max_errors=0, canary=0, spread=spread)
        assert len(d.start) == 1, d
        outcomes[d.start[0]] = "succeeded"
    assert decide([1, 2, 3], outcomes, window=3, max_errors=0, canary=0, spread=spread).state == "succeeded"

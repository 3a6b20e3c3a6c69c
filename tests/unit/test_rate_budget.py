"""The shared token bucket, on a real Redis with a stepped clock: refill, headers, and the bulk reserve."""

from __future__ import annotations

import pytest

from workers.errors import RateBudgetExhausted
from workers.rate_budget import RateBudget, bucket_key

from ..support.processes import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture()
def budget(redis_server: RedisServer, request: pytest.FixtureRequest) -> RateBudget:
    clock = Clock()
    key = bucket_key(f"token-for-{request.node.name}")
    return RateBudget(
        redis_server.client(), key, default_limit=100, clock=clock, sleep=clock.sleep, max_wait=30
    )


def test_key_is_a_hash_not_the_token() -> None:
    assert "secret-token" not in bucket_key("secret-token")
    assert bucket_key("a") != bucket_key("b")


def test_a_full_bucket_serves_its_limit_at_once_then_paces(budget: RateBudget) -> None:
    for _ in range(100):
        assert budget.take() == 0
    # The 101st token comes after 36 s at 100 an hour: longer than this budget's 30 s wait, so it refuses.
    with pytest.raises(RateBudgetExhausted) as info:
        budget.take()
    assert info.value.wait == pytest.approx(36, abs=0.5)


def test_empty_bucket_waits_at_the_refill_rate(redis_server: RedisServer) -> None:
    clock = Clock()
    b = RateBudget(
        redis_server.client(),
        bucket_key("refill"),
        default_limit=3600,
        refill_per_second=10,
        clock=clock,
        sleep=clock.sleep,
        max_wait=5,
    )
    b.observe({"RateLimit-Limit": "3600", "RateLimit-Remaining": "0"})
    assert b.take() == pytest.approx(0.11, abs=0.02)  # one token at 10 a second, plus a little
    with pytest.raises(RateBudgetExhausted):
        b.observe({"RateLimit-Limit": "3600", "RateLimit-Remaining": "0"})
        b.take(max_wait=0.01)


def test_headers_lower_the_bucket_but_never_raise_it(redis_server: RedisServer) -> None:
    clock = Clock()
    b = RateBudget(
        redis_server.client(), bucket_key("headers"), default_limit=3600, clock=clock, sleep=clock.sleep
    )
    b.take()
    b.observe({"RateLimit-Limit": "7200", "RateLimit-Remaining": "50"})
    snap = b.snapshot()
    assert snap["limit"] == 7200 and snap["tokens"] == pytest.approx(50)
    b.observe({"RateLimit-Limit": "7200", "RateLimit-Remaining": "5000"})  # a late, stale answer
    assert b.snapshot()["tokens"] == pytest.approx(50)


def test_bulk_work_leaves_the_reserve_to_interactive_runs(redis_server: RedisServer) -> None:
    clock = Clock()
    b = RateBudget(
        redis_server.client(),
        bucket_key("reserve"),
        default_limit=1000,
        refill_per_second=1,
        bulk_reserve=0.1,
        clock=clock,
        sleep=clock.sleep,
        max_wait=0.5,
    )
    b.observe({"RateLimit-Limit": "1000", "RateLimit-Remaining": "101"})
    assert b.take("bulk") == 0  # 101 -> 100: down to the reserve
    with pytest.raises(RateBudgetExhausted):
        b.take("bulk")  # the last 100 belong to interactive runs
    for _ in range(100):
        assert b.take("interactive") == 0


@pytest.mark.parametrize(("limit", "remaining"), [(100_000_000, 99_999_990), (7200, 7100), (360, 12)])
def test_the_first_answer_sets_the_bucket_to_what_the_api_reports(
    redis_server: RedisServer, limit: int, remaining: int
) -> None:
    # A project whose limit is larger than our default guess is not held back by it, and one whose
    # limit is smaller does not overspend; the bulk floor follows the reported limit.
    clock = Clock()
    b = RateBudget(
        redis_server.client(),
        bucket_key(f"first-{limit}"),
        default_limit=3600,
        clock=clock,
        sleep=clock.sleep,
    )
    b.take()  # spent from the default guess before any answer came
    b.observe({"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining)})
    snap = b.snapshot()
    assert snap["limit"] == limit and snap["tokens"] == pytest.approx(remaining)
    if remaining > 0.1 * limit + 1:
        assert b.take("bulk") == 0, "bulk work may spend what the API reports above the reserve"


def test_a_changed_limit_is_trusted_again(redis_server: RedisServer) -> None:
    clock = Clock()
    b = RateBudget(
        redis_server.client(), bucket_key("changed"), default_limit=3600, clock=clock, sleep=clock.sleep
    )
    b.observe({"RateLimit-Limit": "3600", "RateLimit-Remaining": "10"})
    b.observe({"RateLimit-Limit": "7200", "RateLimit-Remaining": "7000"})  # the project's limit was raised
    assert b.snapshot()["tokens"] == pytest.approx(7000)
    b.observe({"RateLimit-Limit": "7200", "RateLimit-Remaining": "7100"})  # same limit: only lowers
    assert b.snapshot()["tokens"] == pytest.approx(7000)

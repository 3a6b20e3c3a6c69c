"""Fault table for ``start_action``: every point where a POST can fail, and what the API may have done.

No worker process and no network: the client's one seam talks to ``ScriptedAPI``; the ledger lives in the
suite's own redis-server under a key prefix of its own. Each row says how the POSTs fail and asserts the
two promises: the API acted at most once for the step, and the step reports what really happened.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

import pytest

from workers.client import HcloudClient
from workers.engine import LOST_NOTICE, Engine, start_action
from workers.errors import (
    APIError,
    Blocked,
    RateBudgetExhausted,
    RunCancelled,
    StepInProgress,
    TransportError,
)
from workers.ledger import Ledger
from workers.retry_policy import RetryPolicy
from workers.server_actions import ACTIONS
from workers.waits import WaitStore

from ..support.processes import RedisServer
from .scripted_api import BASE, Crash, ScriptedAPI

SERVER = 42


class Budget:
    """A rate budget with room; a test replaces ``take`` to empty it at one request."""

    def take(self, priority: str = "interactive", max_wait: float | None = None) -> float:
        return 0.0

    def observe(self, headers: Any) -> None:
        pass


def engine(redis_server: RedisServer, api: ScriptedAPI, budget: Budget | None = None) -> Engine:
    r = redis_server.client()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = HcloudClient(
        "token",
        base_url=BASE,
        session=api,  # type: ignore[arg-type]
        sleep=lambda _: None,
        budget=budget,  # type: ignore[arg-type]
        policy=RetryPolicy(base=0.0, cap=0.0),
    )
    return Engine(
        client=client,
        redis=r,
        ledger=Ledger(r, prefix=prefix),
        waits=WaitStore(r, prefix=prefix),
        sleep=lambda _: None,
        post_policy=RetryPolicy(base=0.0, cap=0.0),
    )


def posts(api: ScriptedAPI) -> int:
    return sum(1 for method, _ in api.requests_seen if method == "POST")


# script of POST faults -> (attached, POSTs sent on the wire)
ROWS = [
    pytest.param([], False, 1, id="clean"),
    pytest.param(["refused"], False, 2, id="refused-before-send"),
    pytest.param(["connect_timeout"], False, 2, id="connect-timeout"),
    pytest.param(["503"], False, 2, id="503-unavailable-not-processed"),
    pytest.param(["409"], False, 2, id="409-conflict-not-processed"),
    pytest.param(["429"], False, 2, id="429-not-processed"),
    pytest.param(["502_before"], False, 2, id="502-gateway-before-processing"),
    pytest.param(["504_before"], False, 2, id="504-timeout-before-processing"),
    pytest.param(["reset"], True, 1, id="reset-after-send"),
    pytest.param(["read_timeout"], True, 1, id="read-timeout-after-processing"),
    pytest.param(["502_after"], True, 1, id="502-gateway-after-processing"),
    pytest.param(["504_after"], True, 1, id="504-timeout-after-processing"),
    pytest.param(["502_before", "reset"], True, 2, id="gateway-then-lost-answer"),
    pytest.param(["refused", "refused", "read_timeout"], True, 3, id="refused-twice-then-lost"),
]


@pytest.mark.parametrize("action_name", sorted(ACTIONS))
@pytest.mark.parametrize(("script", "attached", "sent"), ROWS)
def test_the_api_acts_at_most_once(
    redis_server: RedisServer, action_name: str, script: list[str], attached: bool, sent: int
) -> None:
    api = ScriptedAPI(script=deque(script))
    api.add_action(SERVER, "start_server")  # an older action of the server
    eng = engine(redis_server, api)
    action = ACTIONS[action_name]
    params = {"image": "debian-12"} if "image" in action.required else {}
    started = start_action(eng, action, SERVER, params, "step-1")
    assert len(api.processed) == 1, "the API must act exactly once for the step"
    assert started.action["id"] == api.processed[0]["id"]
    assert started.attached is attached
    assert posts(api) == sent
    record = eng.ledger.get("step-1")
    assert record.action_id == api.processed[0]["id"]
    assert record.posting_after is not None  # kept with the action: harmless, the action id wins
    if action.secret:
        password = started.outputs["root_password"]
        if attached:
            assert password == {"sealed": None, "notice": LOST_NOTICE}, "a lost password is said to be lost"
        else:
            assert "notice" in password  # no sealing key in this engine: dropped with a notice, never kept


def test_a_lost_answer_then_423_by_our_own_action_attaches(redis_server: RedisServer) -> None:
    # The search after the lost answer misses (the API had not listed the action yet), the resend meets
    # 423 from that very action: ours, newer than the bound, our command. No third POST, no wait.
    api = ScriptedAPI(script=deque(["unlisted"]))
    eng = engine(redis_server, api)
    started = start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-lock")
    assert len(api.processed) == 1
    assert started.attached is True
    assert started.action["id"] == api.processed[0]["id"]
    assert posts(api) == 2  # the lost one, and the resend that met 423


def test_423_by_someone_elses_action_blocks_and_forgets_the_bound(redis_server: RedisServer) -> None:
    api = ScriptedAPI()
    foreign = api.add_action(SERVER, "reboot_server", status="running")
    eng = engine(redis_server, api)
    with pytest.raises(Blocked) as info:
        start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-b")
    assert info.value.action_id == foreign["id"]
    assert api.processed == []
    assert eng.ledger.get("step-b").posting_after is None, "refused: nothing of ours exists"


def test_423_after_doubt_by_an_older_action_with_our_command_still_blocks(redis_server: RedisServer) -> None:
    # Someone else's reboot started before our bound was noted: never ours, even with our command.
    api = ScriptedAPI(script=deque(["502_before"]))
    eng = engine(redis_server, api)
    foreign = api.add_action(SERVER, "reboot_server", status="running")
    eng.ledger.mark_posting("step-old", foreign["id"])  # an earlier delivery noted the bound after it
    with pytest.raises(Blocked):
        start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-old")
    assert api.processed == []


def test_a_foreign_finished_action_of_our_command_is_never_taken_for_ours(redis_server: RedisServer) -> None:
    # Another tool rebooted the server just before our POST, whose answer was lost before the API acted:
    # the search must not attach to that reboot (the bound excludes it), so our reboot is sent again.
    api = ScriptedAPI(script=deque(["502_before"]))
    api.add_action(SERVER, "reboot_server", status="success")
    eng = engine(redis_server, api)
    started = start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-f")
    assert started.attached is False
    assert len(api.processed) == 1 and started.action["id"] == api.processed[0]["id"]


def test_a_crash_between_noting_the_bound_and_recording_reattaches(redis_server: RedisServer) -> None:
    api = ScriptedAPI(script=deque(["crash"]))
    eng = engine(redis_server, api)
    with pytest.raises(Crash):
        start_action(eng, ACTIONS["rebuild"], SERVER, {"image": "debian-12"}, "step-c")
    eng.ledger.release("step-c", "")  # the claim of a dead process lapses (its TTL); here at once
    eng.redis.delete(f"{eng.ledger.prefix}:step:step-c:claim")
    redelivered = start_action(eng, ACTIONS["rebuild"], SERVER, {"image": "debian-12"}, "step-c")
    assert len(api.processed) == 1, "the redelivery found the action instead of rebuilding twice"
    assert redelivered.attached is True
    assert redelivered.outputs["root_password"]["notice"] == LOST_NOTICE
    assert posts(api) == 1


@pytest.mark.parametrize(("crash", "posted"), [("crash", 1), ("crash_before", 0)])
def test_a_cancelled_steps_redelivery_waits_out_what_it_posted_and_posts_nothing_new(
    redis_server: RedisServer, crash: str, posted: int
) -> None:
    """A worker died mid-step, then its run was cancelled: the redelivered step (``stop``) finds the action
    the dead try started, or, when that try never sent its POST, stops there without posting (an outside
    test's cancelled run had hidden the snapshot its step made)."""
    api = ScriptedAPI(script=deque([crash]))
    eng = engine(redis_server, api)
    with pytest.raises(Crash):
        start_action(eng, ACTIONS["create_image"], SERVER, {}, "step-x")
    eng.redis.delete(f"{eng.ledger.prefix}:step:step-x:claim")  # the dead process's claim lapses
    cancelled, tried = RunCancelled("run-x", "create_image"), posts(api)
    if posted:
        found = start_action(eng, ACTIONS["create_image"], SERVER, {}, "step-x", stop=cancelled)
        assert found.attached is True and found.action["id"] == api.processed[0]["id"]
    else:
        with pytest.raises(RunCancelled):
            start_action(eng, ACTIONS["create_image"], SERVER, {}, "step-x", stop=cancelled)
    assert posts(api) == tried and len(api.processed) == posted, "the redelivery posted nothing"


def test_a_recorded_action_is_reattached_without_any_post(redis_server: RedisServer) -> None:
    api = ScriptedAPI()
    eng = engine(redis_server, api)
    first = start_action(eng, ACTIONS["power_off"], SERVER, {}, "step-r")
    again = start_action(eng, ACTIONS["power_off"], SERVER, {}, "step-r")
    assert again.attached is True and again.action["id"] == first.action["id"]
    assert posts(api) == 1


def test_budget_exhausted_sends_nothing_and_leaves_no_doubt(redis_server: RedisServer) -> None:
    api = ScriptedAPI()
    api.add_action(SERVER, "start_server")
    eng = engine(redis_server, api, Budget())
    # The bound read takes the token; the POST then finds the budget empty.
    budget = eng.client.budget
    calls = {"n": 0}

    def take(priority: str = "interactive", max_wait: float | None = None) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RateBudgetExhausted(7.0)
        return 0.0

    budget.take = take  # type: ignore[union-attr, method-assign]
    with pytest.raises(RateBudgetExhausted):
        start_action(eng, ACTIONS["shutdown"], SERVER, {}, "step-budget")
    assert api.processed == [] and posts(api) == 0
    assert eng.ledger.get("step-budget").posting_after is None
    again = start_action(eng, ACTIONS["shutdown"], SERVER, {}, "step-budget")
    assert again.attached is False and len(api.processed) == 1


def test_a_lost_answer_then_budget_exhausted_keeps_the_doubt(redis_server: RedisServer) -> None:
    # The POST may have acted; the search cannot run for want of budget. The bound stays, so the next
    # delivery searches before it posts: one action, found again.
    api = ScriptedAPI(script=deque(["reset"]))
    eng = engine(redis_server, api, Budget())
    calls = {"n": 0}

    def take(priority: str = "interactive", max_wait: float | None = None) -> float:
        calls["n"] += 1
        if calls["n"] == 3:  # bound read, POST, then the search
            raise RateBudgetExhausted(3.0)
        return 0.0

    eng.client.budget.take = take  # type: ignore[union-attr, method-assign]
    with pytest.raises(RateBudgetExhausted):
        start_action(eng, ACTIONS["reset_password"], SERVER, {}, "step-d")
    assert eng.ledger.get("step-d").posting_after is not None
    again = start_action(eng, ACTIONS["reset_password"], SERVER, {}, "step-d")
    assert again.attached is True and len(api.processed) == 1
    assert again.outputs["root_password"]["notice"] == LOST_NOTICE


def test_another_delivery_posting_now_is_told_to_come_back(redis_server: RedisServer) -> None:
    api = ScriptedAPI()
    eng = engine(redis_server, api)
    assert eng.ledger.claim("step-x", 30) is not None
    with pytest.raises(StepInProgress):
        start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-x")
    assert posts(api) == 0


def test_refused_answers_fail_without_a_second_post(redis_server: RedisServer) -> None:
    api = ScriptedAPI(script=deque(["protected"]))
    eng = engine(redis_server, api)
    with pytest.raises(APIError) as info:
        start_action(eng, ACTIONS["rebuild"], SERVER, {"image": "x"}, "step-p")
    assert info.value.code == "protected"
    assert posts(api) == 1
    assert eng.ledger.get("step-p").posting_after is None


def test_refused_on_every_try_ends_in_a_transport_error_that_says_nothing_was_sent(
    redis_server: RedisServer,
) -> None:
    api = ScriptedAPI(script=deque(["refused"] * 10))
    eng = engine(redis_server, api)
    with pytest.raises(TransportError) as info:
        start_action(eng, ACTIONS["power_on"], SERVER, {}, "step-down")
    assert info.value.maybe_sent is False
    assert api.processed == []


def test_the_bound_comes_from_the_previous_step_without_a_read(redis_server: RedisServer) -> None:
    api = ScriptedAPI()
    previous = api.add_action(SERVER, "stop_server")
    eng = engine(redis_server, api)
    start_action(eng, ACTIONS["power_on"], SERVER, {}, "step-n", after=previous["id"])
    assert [m for m, _ in api.requests_seen] == ["POST"], "no read of the server's newest action"
    assert eng.ledger.get("step-n").posting_after == previous["id"]


def test_a_record_read_before_the_claim_is_read_again_under_it(redis_server: RedisServer) -> None:
    # Two deliveries of one step: this one read the ledger (empty) before the other posted, recorded its
    # action and let go of its claim. Posting on the stale record would start the action twice.
    api = ScriptedAPI()
    eng = engine(redis_server, api)
    stale = eng.ledger.get("step-s")
    other = start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-s")
    late = start_action(eng, ACTIONS["reboot"], SERVER, {}, "step-s", record=stale)
    assert late.attached is True and late.action["id"] == other.action["id"]
    assert posts(api) == 1 and len(api.processed) == 1


@pytest.mark.parametrize(("tick", "renewals"), [(0.0, 0), (2.0, 1)])
def test_the_claim_is_renewed_before_a_post_only_when_it_has_aged(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tick: float, renewals: int
) -> None:
    # Just taken, the claim has its whole TTL; after slow reads (here: a clock that moves 2 s a look) it is
    # renewed before the POST, so that it lapses soon only if this process dies.
    api = ScriptedAPI()
    eng = engine(redis_server, api)
    now = [1000.0]

    def clock() -> float:
        now[0] += tick
        return now[0]

    eng.clock = clock
    seen: list[str] = []
    monkeypatch.setattr(eng.ledger, "renew", lambda key, token, ttl: seen.append(key))
    start_action(eng, ACTIONS["reboot"], SERVER, {}, f"step-renew-{tick}")
    assert len(seen) == renewals and posts(api) == 1

"""The wait's transitions as a table: no Redis, no Celery, no clock but the one in each row."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from workers.errors import AcpiIgnored, ActionFailed, WaitTimeout
from workers.wait_state import (
    GONE,
    OTHER,
    Cadence,
    Fail,
    ForceOff,
    Observation,
    Phase,
    Poll,
    Resend,
    Succeed,
    Wait,
    advance,
    after_force,
    next_poll,
    rules_for,
)

CADENCE = Cadence(first=1.0, growth=1.5, cap=10.0)
T0 = 1000.0


def wait(action: str = "shutdown", **fields: Any) -> Wait:
    base = Wait(
        id="step",
        action=action,
        step="whatever-the-user-called-it",
        server_id=7,
        phase=Phase.ACTION,
        started=T0,
        deadline=T0 + 600,
        next=T0,
        action_id=11,
        grace=30.0,
        result={"server_id": 7},
    )
    return replace(base, **fields)


def act(status: str, progress: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": 11, "command": "x", "status": status, "progress": progress, "finished": None, **extra}


def run(w: Wait, **seen: Any) -> tuple[Wait, Any]:
    now = seen.pop("now", T0 + 1)
    return advance(w, Observation(now, **seen), rules_for(w.action), CADENCE)


# (name, wait, observation, expected effect type, expected next phase)
TABLE = [
    ("running action: poll again", wait(), {"action": act("running", 40)}, Poll, Phase.ACTION),
    ("not looked at: poll again", wait(), {}, Poll, Phase.ACTION),
    ("action missing once: poll again", wait(), {"action_gone": True}, Poll, Phase.ACTION),
    ("missing five times: fail", wait(missing=4), {"action_gone": True}, Fail, Phase.ACTION),
    (
        "action error: fail",
        wait(),
        {"action": act("error", error={"code": "c", "message": "m"})},
        Fail,
        Phase.ACTION,
    ),
    ("success, target off: look at it now", wait(), {"action": act("success", 100)}, Poll, Phase.STATE),
    (
        "success, no target (reboot): done",
        wait("reboot"),
        {"action": act("success", 100)},
        Succeed,
        Phase.ACTION,
    ),
    (
        "success, target waived: done",
        wait(wait_state=False),
        {"action": act("success")},
        Succeed,
        Phase.ACTION,
    ),
    (
        "success, image target: look at it",
        wait("create_image"),
        {"action": act("success")},
        Poll,
        Phase.STATE,
    ),
    ("past the deadline: fail", wait(), {"action": act("running"), "now": T0 + 601}, Fail, Phase.ACTION),
    (
        "state reached: done",
        wait(phase=Phase.STATE, since=T0),
        {"server_status": "off"},
        Succeed,
        Phase.STATE,
    ),
    (
        "state not yet, in grace",
        wait(phase=Phase.STATE, since=T0),
        {"server_status": "running"},
        Poll,
        Phase.STATE,
    ),
    (
        "ACPI ignored past grace: force",
        wait(phase=Phase.STATE, since=T0),
        {"server_status": "running", "now": T0 + 31},
        ForceOff,
        Phase.STATE,
    ),
    (
        "ACPI ignored, force forbidden: fail at grace",
        wait(phase=Phase.STATE, since=T0, force=False),
        {"server_status": "running", "now": T0 + 31},
        Fail,
        Phase.STATE,
    ),
    (
        "already forced: keep waiting for off",
        wait(phase=Phase.STATE, since=T0, forced=True),
        {"server_status": "running", "now": T0 + 100},
        Poll,
        Phase.STATE,
    ),
    (
        "power_off (no ACPI) past any grace: keep waiting",
        wait("power_off", phase=Phase.STATE, since=T0),
        {"server_status": "running", "now": T0 + 100},
        Poll,
        Phase.STATE,
    ),
    ("server gone: fail", wait(phase=Phase.STATE, since=T0), {"server_status": GONE}, Fail, Phase.STATE),
    (
        "not among the off servers, in grace: poll",
        wait(phase=Phase.STATE, since=T0),
        {"server_status": OTHER},
        Poll,
        Phase.STATE,
    ),
    (
        "not among the off servers past grace: force",
        wait(phase=Phase.STATE, since=T0),
        {"server_status": OTHER, "now": T0 + 31},
        ForceOff,
        Phase.STATE,
    ),
    (
        "image available: done",
        wait("create_image", phase=Phase.STATE, since=T0, image_id=5),
        {"image_status": "available"},
        Succeed,
        Phase.STATE,
    ),
    (
        "image creating: poll",
        wait("create_image", phase=Phase.STATE, since=T0, image_id=5),
        {"image_status": "creating"},
        Poll,
        Phase.STATE,
    ),
    (
        "image gone: fail",
        wait("create_image", phase=Phase.STATE, since=T0, image_id=5),
        {"image_status": GONE},
        Fail,
        Phase.STATE,
    ),
    ("blocker running: poll", wait(phase=Phase.BLOCKED), {"action": act("running")}, Poll, Phase.BLOCKED),
    ("blocker ended: resend", wait(phase=Phase.BLOCKED), {"action": act("success")}, Resend, Phase.BLOCKED),
    (
        "blocker failed: resend too",
        wait(phase=Phase.BLOCKED),
        {"action": act("error")},
        Resend,
        Phase.BLOCKED,
    ),
    ("later, not yet due: wait", wait(phase=Phase.LATER, next=T0 + 5), {}, Poll, Phase.LATER),
    ("later, due: resend", wait(phase=Phase.LATER, next=T0 + 1), {}, Resend, Phase.LATER),
    ("hand-off, next step not due: wait", wait(phase=Phase.HANDOFF, next=T0 + 30), {}, Poll, Phase.HANDOFF),
    (
        "hand-off lost: send the next step again",
        wait(phase=Phase.HANDOFF, next=T0),
        {},
        Succeed,
        Phase.HANDOFF,
    ),
    (
        "hand-off lost three times: fail",
        wait(phase=Phase.HANDOFF, next=T0, handoffs=3),
        {},
        Fail,
        Phase.HANDOFF,
    ),
    (
        "hand-off outlives the deadline",
        wait(phase=Phase.HANDOFF, next=T0 + 700),
        {"now": T0 + 650},
        Poll,
        Phase.HANDOFF,
    ),
]


@pytest.mark.parametrize(
    ("w", "seen", "effect", "phase"), [row[1:] for row in TABLE], ids=[r[0] for r in TABLE]
)
def test_transition_table(w: Wait, seen: dict[str, Any], effect: type, phase: Phase) -> None:
    nxt, got = run(w, **dict(seen))
    assert isinstance(got, effect), got
    assert nxt.phase is phase
    if isinstance(got, Poll):
        assert got.at >= T0, "a poll is never planned in the past of the wait"


def test_failures_name_server_step_action_and_code() -> None:
    _, got = run(wait(), action=act("error", error={"code": "action_failed", "message": "Action failed"}))
    assert isinstance(got.error, ActionFailed)
    assert str(got.error) == (
        "server 7, step whatever-the-user-called-it: action 11 failed: Action failed (action_failed)"
    )


def test_the_fallback_follows_the_action_not_the_step_name() -> None:
    # The row of "shutdown" carries the fallback; the step's label is irrelevant.
    w = wait(phase=Phase.STATE, since=T0, step="drain-and-stop")
    _, got = run(w, server_status="running", now=T0 + 31)
    assert got == ForceOff("power_off")


def test_no_force_fails_at_grace_and_says_acpi_and_what_to_do() -> None:
    w = wait(phase=Phase.STATE, since=T0, force=False, grace=8.0)
    _, early = run(w, server_status="running", now=T0 + 7)
    assert isinstance(early, Poll) and early.at <= T0 + 8, "the grace point is never polled past"
    _, got = run(w, server_status="running", now=T0 + 8)
    assert isinstance(got, Fail) and isinstance(got.error, AcpiIgnored)
    text = str(got.error)
    assert "ACPI" in text and "8 s" in text and "power-off" in text and "--no-force" in text


def test_after_force_watches_the_power_off_and_never_forces_twice() -> None:
    w = wait(phase=Phase.STATE, since=T0)
    forced = after_force(w, {"id": 99, "progress": 0}, T0 + 31)
    assert forced.phase is Phase.ACTION and forced.action_id == 99 and forced.forced
    assert forced.result["forced"] is True and forced.result["force_action_id"] == 99
    done, effect = run(forced, action={**act("success"), "id": 99}, now=T0 + 33)
    assert isinstance(effect, Poll) and done.phase is Phase.STATE
    _, again = run(done, server_status="running", now=T0 + 200)
    assert isinstance(again, Poll)


def test_timeouts_say_what_was_waited_for() -> None:
    _, got = run(wait(phase=Phase.BLOCKED), action=act("running"), now=T0 + 601)
    assert isinstance(got.error, WaitTimeout) and "running action 11" in str(got.error)


# -- poll timing: one function, and the cap holds ------------------------------------------------------


def test_the_cap_bounds_every_pause() -> None:
    w = wait(expected=29.0)  # a long learned duration (a rebuild)
    at, _ = next_poll(w, T0, CADENCE)
    assert at == T0 + 10.0, "the first poll comes within the cap, not at the expected end"
    for now in (T0 + 10, T0 + 500, T0 + 5000):
        at, _ = next_poll(replace(w, expected=None), now, CADENCE)
        assert at - now <= CADENCE.cap


def test_learned_duration_sets_the_poll_at_the_expected_end() -> None:
    w = wait(expected=8.0)
    at, late = next_poll(w, T0 + 1, CADENCE)
    assert at == T0 + 8.0 and late == 0
    at, late = next_poll(w, T0 + 8, CADENCE)  # still running at the expected end: soon ...
    assert at == pytest.approx(T0 + 8.5) and late == 1
    at, late = next_poll(replace(w, late_polls=late), T0 + 8.5, CADENCE)  # ... then backing off
    assert at == pytest.approx(T0 + 8.5 + 0.75) and late == 2
    short = wait(expected=3.0)  # a short action: a tenth of its duration, at least MIN_PAUSE
    at, _ = next_poll(short, T0 + 3, CADENCE)
    assert at == pytest.approx(T0 + 3.3)
    long = wait(expected=100.0)  # a long action: half a second, not a tenth of 100 s
    at, late = next_poll(long, T0 + 100, CADENCE)
    assert at == pytest.approx(T0 + 100.5)
    gaps = []
    for _ in range(12):  # backing off from there, never further apart than the cadence's cap
        now = at
        at, late = next_poll(replace(long, late_polls=late), now, CADENCE)
        gaps.append(at - now)
    assert gaps == sorted(gaps) and max(gaps) <= CADENCE.cap and late == 13


def test_progress_tells_the_end_when_nothing_was_learned() -> None:
    at, _ = next_poll(wait(progress=25), T0 + 2, CADENCE)  # 25% after 2 s: the end is due at 8 s
    assert at == T0 + 8.0


def test_backoff_follows_age_not_poll_count() -> None:
    w = wait()
    for _ in range(10):  # polled ten times to fill batch requests, all at 1 s of age
        at, late = next_poll(w, T0 + 1, CADENCE)
        w = replace(w, late_polls=late)
    assert at == T0 + 2.0
    at, _ = next_poll(w, T0 + 40, CADENCE)
    assert at == T0 + 50.0


def test_a_wait_survives_its_json_round_trip() -> None:
    w = wait(phase=Phase.STATE, since=T0 + 3, image_id=4, request={"id": "step", "chain": []})
    assert Wait.from_json(w.to_json()) == w


def test_a_failed_password_reset_says_what_to_check() -> None:
    """The API's code for a guest without the QEMU agent is not documented; any failure gets the hint."""
    failed = act("error", error={"code": "action_failed", "message": "Action failed"})
    _, got = run(wait("reset_password"), action=failed)
    assert isinstance(got.error, ActionFailed)
    assert "Action failed (action_failed); resetting the password needs" in str(got.error)
    assert "QEMU guest agent" in str(got.error)
    _, other = run(wait("reboot"), action=failed)
    assert str(other.error).endswith("(action_failed)"), "other actions carry no hint"

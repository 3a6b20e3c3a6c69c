"""A parked wait as typed state, and the one pure function that decides what happens to it next.

The monitor is the I/O around this module: it loads due waits, observes what they need (their action, the
server's status, the image's status), calls ``advance`` and carries out the one effect it returns. Nothing
here reads Redis, the API or the clock, so every transition is a row of a table test
(tests/unit/test_wait_state.py).

    phase      what is watched                    ends in
    ACTION     the step's action                  STATE (a target to reach), Succeed, Fail
    STATE      the server's or image's status     Succeed, ForceOff (then ACTION again), Fail
    BLOCKED    someone else's action (423)        Resend (the step posts again)
    LATER      nothing but the time               Resend (the budget has refilled, or a 423's blocker ended)
    HANDOFF    the next step to start             Succeed again (its message was lost), or gone when it starts

What an action needs (a target state, a forced fallback after an ignored ACPI signal) comes from its row
in ``ACTIONS``, passed in as ``ActionRules``; never from the step's or workflow's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .errors import AcpiIgnored, ActionFailed, HcloudFlowError, WaitTimeout
from .server_actions import ACTIONS, TargetState

__all__ = [
    "GONE",
    "OTHER",
    "ActionRules",
    "Cadence",
    "Effect",
    "Fail",
    "ForceOff",
    "Observation",
    "Phase",
    "Poll",
    "Resend",
    "Succeed",
    "Wait",
    "advance",
    "after_force",
    "next_poll",
    "rules_for",
]

# A server or image status that says the API no longer knows the resource (404).
GONE = "gone"
# A server status that says only "not in the target state": it was missing from a list of the servers that
# are (``GET /servers?status=off``). A server deleted meanwhile looks the same; its deadline says so.
OTHER = "other"
# Unknown to GET /actions this many polls in a row: the action is gone, not late.
MAX_MISSING = 5
# Progress below this says too little about the end to plan a poll on it.
PROGRESS_HINT = 5
# Never plan two polls of one wait closer than this.
MIN_PAUSE = 0.2
# Longest first look past an action's expected end (see next_poll).
LATE_FIRST_CAP = 0.5
# How long a finished step waits for the next one to start before sending it again, and how many times.
HANDOFF_AFTER = 30.0
MAX_HANDOFFS = 3


class Phase(StrEnum):
    """What a wait is waiting for."""

    ACTION = "action"
    STATE = "state"
    BLOCKED = "blocked"
    LATER = "later"
    HANDOFF = "handoff"


@dataclass(frozen=True)
class Cadence:
    """How often a wait is polled: soon after it starts, then backing off; never a longer pause than cap."""

    first: float = 1.0
    growth: float = 1.5
    cap: float = 10.0

    def interval(self, polls: int) -> float:
        """Return the pause before poll number ``polls + 1`` of a back-off."""
        return min(self.cap, self.first * self.growth**polls)


@dataclass(frozen=True)
class ActionRules:
    """The fields of an action's row that decide how its wait ends."""

    target: TargetState | None = None
    acpi: bool = False
    fallback: str | None = None
    failure_hint: str | None = None


def rules_for(action: str) -> ActionRules:
    """Return the rules of a row of ``ACTIONS``."""
    row = ACTIONS[action]
    return ActionRules(target=row.target, acpi=row.acpi, fallback=row.fallback, failure_hint=row.failure_hint)


@dataclass(frozen=True)
class Wait:
    """One parked step: what it waits for, when to look next, and what continuing its chain needs."""

    id: str  # the step's Celery task id, also its ledger key
    action: str  # the row of ACTIONS this step runs: its rules come from there
    step: str  # the step's label, for messages only
    server_id: int
    phase: Phase
    started: float  # when this wait began (our clock)
    deadline: float  # when it fails, whatever it waits for (our clock)
    next: float  # when it is polled next
    action_id: int | None = None  # the action watched (ACTION: ours; BLOCKED: the one that blocked us)
    wait_state: bool = True  # the user may waive the target state
    force: bool = True  # the user may forbid the forced fallback
    grace: float = 60.0  # seconds an ACPI signal gets before the fallback (or the failure)
    expected: float | None = None  # learned duration of the action's command
    progress: int = 0
    missing: int = 0
    handoffs: int = 0  # times the next step was sent again by the hand-off watch
    late_polls: int = 0
    since: float | None = None  # when the current phase began (None: when the wait began)
    forced: bool = False
    image_id: int | None = None
    run_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # the step's result so far (JSON)
    request: dict[str, Any] = field(default_factory=dict)  # the Celery request fields, to continue the chain

    @property
    def deadline_seconds(self) -> float:
        return self.deadline - self.started

    @property
    def phase_start(self) -> float:
        return self.started if self.since is None else self.since

    def to_json(self) -> dict[str, Any]:
        """Return the wait as JSON for the store."""
        # Shallow on purpose: asdict() deep-copies the request and result, a tenth of a worker's CPU at 100
        # servers, for a dict that json.dumps copies anyway.
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["phase"] = self.phase.value
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Wait:
        """Rebuild a wait from the store."""
        return cls(**{**raw, "phase": Phase(raw["phase"])})


@dataclass(frozen=True)
class Observation:
    """What the monitor saw for one wait this round; None means "not looked at" (or the look failed)."""

    now: float
    action: dict[str, Any] | None = None  # the watched action as GET /actions answered it
    action_gone: bool = False  # it was asked for and the API did not list it
    server_status: str | None = None  # GONE when the server no longer exists
    image_status: str | None = None  # GONE when the image no longer exists


@dataclass(frozen=True)
class Poll:
    """Keep waiting; look again at ``at``."""

    at: float


@dataclass(frozen=True)
class Succeed:
    """The step is done: continue its chain with its result plus ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """The step failed: fail its chain with ``error``."""

    error: HcloudFlowError


@dataclass(frozen=True)
class ForceOff:
    """The guest ignored the ACPI signal for the grace period: start ``action`` as part of this step."""

    action: str


@dataclass(frozen=True)
class Resend:
    """Send the step's message again: the action that blocked it ended, or the budget has refilled."""


Effect = Poll | Succeed | Fail | ForceOff | Resend


def next_poll(wait: Wait, now: float, cadence: Cadence) -> tuple[float, int]:
    """Return when to poll ``wait`` next, and its count of polls past the expected end.

    At the action's expected end when that can be told (a learned duration, or the action's own
    progress), else backing off with the wait's age (not its poll count: polls that merely filled a
    batch request must not push the next one out). Never later than ``cadence.cap`` from now.
    """
    since = wait.phase_start
    age = max(0.0, now - since)
    late = wait.late_polls
    expected = None
    if wait.phase is Phase.ACTION:
        expected = wait.expected
        if expected is None and PROGRESS_HINT <= wait.progress < 100:
            expected = age * 100 / wait.progress
    if expected is not None and age < expected:
        at = max(now + MIN_PAUSE, since + expected)
    elif expected is not None:
        # Past the expected end: the end is near, so look again soon — a tenth of the expected duration,
        # growing from there — rather than backing off as if nothing were known.
        late += 1
        # The API stamps times to the second, so a learned duration is off by up to a second either way;
        # an action running at its expected end is mostly a few hundred ms from its end. Half a second
        # finds it without waiting a tenth of a long duration (2 s for a snapshot) for the second look.
        step = min(LATE_FIRST_CAP, max(MIN_PAUSE, 0.1 * expected)) * cadence.growth ** (late - 1)
        at = now + min(cadence.interval(late - 1), step)
    else:
        at = now + max(cadence.first, min(cadence.cap, age * (cadence.growth - 1)))
    return min(at, now + cadence.cap), late


def _poll(wait: Wait, now: float, cadence: Cadence, *, limit: float | None = None) -> tuple[Wait, Effect]:
    at, late = next_poll(wait, now, cadence)
    if limit is not None:
        at = max(now, min(at, limit))
    return replace(wait, late_polls=late, next=at), Poll(at)


def _timeout(wait: Wait) -> WaitTimeout:
    if wait.phase is Phase.ACTION:
        what = f"action {wait.action_id} to finish"
    elif wait.phase is Phase.BLOCKED:
        what = f"the server's running action {wait.action_id} to end"
    elif wait.phase is Phase.LATER:
        what = "its turn to be sent again (the API request budget, or a locked server)"
    else:
        what = f"the {rules_for(wait.action).target} state"
    running = wait.phase is Phase.ACTION and wait.action_id is not None
    return WaitTimeout(wait.server_id, wait.step, wait.action_id, what, wait.deadline_seconds, running)


def advance(wait: Wait, seen: Observation, rules: ActionRules, cadence: Cadence) -> tuple[Wait, Effect]:
    """Return the next wait and the one effect to carry out, from what was seen at ``seen.now``."""
    now = seen.now
    if now > wait.deadline and wait.phase is not Phase.HANDOFF:
        return wait, Fail(_timeout(wait))
    if wait.phase is Phase.HANDOFF:
        # The step succeeded and its chain went on, but the next step has not started (it removes this
        # wait when it does): its message was lost, e.g. with a worker killed as it took it. Send it again.
        if now < wait.next:
            return wait, Poll(wait.next)
        if wait.handoffs >= MAX_HANDOFFS:
            return wait, Fail(
                WaitTimeout(wait.server_id, wait.step, wait.action_id, "the next step to start", 0)
            )
        return replace(wait, handoffs=wait.handoffs + 1), Succeed()
    if wait.phase is Phase.LATER:
        return (wait, Resend()) if now >= wait.next else (wait, Poll(wait.next))
    if wait.phase in (Phase.ACTION, Phase.BLOCKED):
        return _on_action(wait, seen, rules, cadence)
    return _on_state(wait, seen, rules, cadence)


def _on_action(wait: Wait, seen: Observation, rules: ActionRules, cadence: Cadence) -> tuple[Wait, Effect]:
    now, action = seen.now, seen.action
    if action is None:
        if not seen.action_gone:
            return _poll(wait, now, cadence)  # not looked at this round (or the look failed)
        missing = wait.missing + 1
        if missing >= MAX_MISSING:
            gone = WaitTimeout(
                wait.server_id, wait.step, wait.action_id, "an action the API no longer knows", 0
            )
            return wait, Fail(gone)
        return _poll(replace(wait, missing=missing), now, cadence)
    wait = replace(wait, missing=0)
    status = action.get("status")
    if status == "running":
        if wait.phase is Phase.ACTION:
            wait = replace(wait, progress=int(action.get("progress") or 0))
        return _poll(wait, now, cadence)
    if wait.phase is Phase.BLOCKED:
        return wait, Resend()
    if status == "error":
        err = action.get("error") or {}
        failed = ActionFailed(
            wait.server_id,
            wait.step,
            int(action["id"]),
            str(err.get("code") or "unknown_error"),
            str(err.get("message") or "the action failed"),
            rules.failure_hint,
        )
        return wait, Fail(failed)
    result = {**wait.result, "finished": action.get("finished")}
    wait = replace(wait, progress=100, result=result)
    if rules.target is None or not wait.wait_state:
        return wait, Succeed()
    # The target is looked at in this same round: news of the state comes no later than the action's.
    return replace(wait, phase=Phase.STATE, since=now, late_polls=0, next=now), Poll(now)


def _on_state(wait: Wait, seen: Observation, rules: ActionRules, cadence: Cadence) -> tuple[Wait, Effect]:
    now = seen.now
    if rules.target == "image_available":
        status = seen.image_status
        if status == "available":
            return wait, Succeed({"image_status": status})
        if status == GONE:
            gone = WaitTimeout(wait.server_id, wait.step, wait.action_id, "an image that no longer exists", 0)
            return wait, Fail(gone)
        return _poll(wait, now, cadence)
    status = seen.server_status
    if status is not None and status == rules.target:
        return wait, Succeed({"server_status": status})
    if status == GONE:
        gone = WaitTimeout(wait.server_id, wait.step, wait.action_id, "a server that no longer exists", 0)
        return wait, Fail(gone)
    if not rules.acpi or wait.forced:
        return _poll(wait, now, cadence)
    # An ACPI signal: the guest gets the grace period, then the fallback forces the state, or we say why not.
    give_up = wait.phase_start + wait.grace
    if status is not None and now >= give_up:
        if rules.fallback is not None and wait.force:
            return wait, ForceOff(rules.fallback)
        return wait, Fail(
            AcpiIgnored(wait.server_id, wait.step, wait.action_id, f"'{rules.target}'", wait.grace)
        )
    return _poll(wait, now, cadence, limit=give_up)


def after_force(wait: Wait, action: dict[str, Any], now: float) -> Wait:
    """Return the wait after its forced fallback started: it now watches that action."""
    result = {**wait.result, "forced": True, "force_action_id": int(action["id"])}
    return replace(
        wait,
        phase=Phase.ACTION,
        action_id=int(action["id"]),
        forced=True,
        progress=int(action.get("progress") or 0),
        expected=None,
        late_polls=0,
        since=now,
        next=now + MIN_PAUSE,
        result=result,
    )

"""Fleet job rules as pure functions: amounts (N or P%), which servers start next, and the dry-run estimate.

The rules, exactly (also in the README):
- At most ``max_concurrency`` runs are in flight; the next server starts as soon as one ends (a sliding
  window, not lock-step batches).
- With ``canary`` N, the first N servers that start run alone (still at most the window at once); every one
  must succeed before any other server starts. A canary failure ends the job ``failed``.
- A server busy with another run is skipped and reported; it is not an error and does not count as canary.
- An error is a run that ended ``failed`` or a server the submit refused (e.g. rebuild-protected). Once the
  errors exceed ``max_errors`` (so ``0`` stops at the first error, ``3`` at the fourth), nothing new starts;
  runs already in flight finish and are recorded. Because up to ``max_concurrency - 1`` other runs can be in
  flight when the threshold is crossed, and each of them may fail too, the final error count can exceed the
  threshold by at most ``max_concurrency - 1``. Use ``--max-concurrency 1`` for an exact bound.
- After a maintenance window's cutoff, nothing new starts; the servers not reached are recorded as
  ``not_started``.
- Spread limits: with ``max_per_placement_group`` / ``max_per_location`` N, at most N servers of one
  placement group / one location are in flight at once, beside ``max_concurrency``; a server held back by
  them waits while later servers of other groups or locations fill the window.
- Approval gates: with ``approve_before_start`` nothing starts, and with ``approve_after_canary`` nothing
  starts after a canary wave that succeeded, until someone approves (``job approve``); the job is
  ``awaiting_approval`` meanwhile. ``job reject``, or no approval within ``approval_timeout``, cancels it:
  the servers not reached are ``not_started``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from workers.errors import BadInput

__all__ = [
    "ENDED",
    "ERROR_OUTCOMES",
    "GATES",
    "JOB_CONTROLS",
    "Amount",
    "Decision",
    "Spread",
    "decide",
    "estimate",
    "parse_amount",
]

ERROR_OUTCOMES = frozenset({"failed", "refused"})
ENDED = frozenset({"succeeded", "failed", "refused", "cancelled", "skipped", "not_started"})

# The approval gates a job may have: the spec's flag that asks for it, and what the job waits for there.
GATES: dict[str, tuple[str, str]] = {
    "before_start": ("approve_before_start", "approval before the first server starts"),
    "after_canary": ("approve_after_canary", "approval after the canary wave succeeded"),
}

# What may be done to a job that has not ended, with the summary every surface (CLI, HTTP) shows; the
# fleet runner has a method of each name. Only a job awaiting approval takes ``approve`` and ``reject``.
JOB_CONTROLS: dict[str, str] = {
    "pause": "Stop starting new servers; those in flight finish.",
    "resume": "Start servers again after a pause.",
    "cancel": "Start no more servers and cancel the runs in flight before their next step.",
    "approve": "Let a job awaiting approval go on (before its start or after its canary wave).",
    "reject": "Cancel a job awaiting approval; its servers not reached are not_started.",
}


@dataclass(frozen=True)
class Amount:
    """A count given as a number or a percentage of the fleet."""

    value: float
    percent: bool

    def of(self, total: int, *, at_least: int = 0) -> int:
        """Return the absolute count for a fleet of ``total`` servers."""
        n = math.floor(total * self.value / 100) if self.percent else int(self.value)
        return max(at_least, n)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


def parse_amount(text: Any, name: str, *, minimum: int) -> Amount:
    """Parse ``N`` or ``P%``; refuse anything else with a message saying what is allowed."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    number = raw[:-1] if percent else raw
    if not (number.isascii() and number.replace(".", "", 1).isdigit()) or isinstance(text, bool):
        raise BadInput(f"{name} must be a whole number or a percentage like 20%, not {text!r}", name)
    value = float(number)
    if percent:
        low_ok = value > 0 if minimum > 0 else value >= 0
        if not (low_ok and value <= 100):
            span = "more than 0% and at most 100%" if minimum > 0 else "from 0% to 100%"
            raise BadInput(f"{name} as a percentage must be {span}, not {raw}", name)
    elif value != int(value) or value < minimum or value > 100_000:
        raise BadInput(f"{name} must be a whole number from {minimum} to 100000, not {raw}", name)
    return Amount(value, percent)


@dataclass(frozen=True)
class Decision:
    """What the job does now: servers to start, and its state once nothing is left to decide."""

    start: tuple[int, ...]
    # "running", "awaiting_approval", or a final one: "succeeded", "completed_with_failures", "failed"
    state: str
    reason: str | None = None
    not_started: tuple[int, ...] = ()
    gate: str | None = None  # with "awaiting_approval": which gate of GATES
    stopped_by: str | None = None  # what stopped new starts: "threshold", "canary" or "cutoff"


@dataclass(frozen=True)
class Spread:
    """Where each server is, and how many of one place may be in flight at once (None: no limit)."""

    group_of: dict[int, int | None]
    location_of: dict[int, str | None]
    max_per_group: int | None = None
    max_per_location: int | None = None

    def pick(self, pending: list[int], running: list[int], room: int) -> tuple[int, ...]:
        """Return up to ``room`` of ``pending``, in order, that keep every place within its limit."""
        places = (
            (self.group_of, self.max_per_group),
            (self.location_of, self.max_per_location),
        )
        live = [(where, limit, _count(where, running)) for where, limit in places if limit is not None]
        chosen: list[int] = []
        for sid in pending:
            if len(chosen) >= room:
                break
            # A server outside any group (no placement group) is never held back by the group limit.
            if all(where.get(sid) is None or n.get(where[sid], 0) < limit for where, limit, n in live):
                chosen.append(sid)
                for where, _, n in live:
                    if where.get(sid) is not None:
                        n[where[sid]] = n.get(where[sid], 0) + 1
        return tuple(chosen)


def _count(where: dict[int, Any], servers: list[int]) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for sid in servers:
        if where.get(sid) is not None:
            counts[where[sid]] = counts.get(where[sid], 0) + 1
    return counts


def decide(
    order: list[int],
    outcomes: dict[int, str],
    *,
    window: int,
    max_errors: int,
    canary: int,
    cutoff_passed: bool = False,
    closed: frozenset[str] = frozenset(),
    spread: Spread | None = None,
    waiting: frozenset[int] = frozenset(),
) -> Decision:
    """Return which pending servers start now, given every server's outcome so far (pending if absent).

    ``closed`` holds the approval gates the job asked for and nobody has approved yet. ``waiting`` holds
    pending servers that may not start yet (their start met an API outage): still pending, but the servers
    after them start meanwhile.
    """
    running = [s for s in order if outcomes.get(s) == "running"]
    errors = sum(1 for s in order if outcomes.get(s) in ERROR_OUTCOMES)
    pending = [s for s in order if s not in outcomes]
    attempted = [s for s in order if outcomes.get(s) not in (None, "skipped")]
    canaries = attempted[:canary]
    stop_reason = stopped_by = None
    if errors > max_errors:
        many = f"{errors} errors exceed" if errors != 1 else "1 error exceeds"
        stop_reason, stopped_by = f"{many} --max-errors {max_errors}", "threshold"
    elif canary and any(outcomes.get(s) in ERROR_OUTCOMES for s in canaries):
        stop_reason, stopped_by = "a canary failed", "canary"
    elif cutoff_passed and pending:
        stop_reason, stopped_by = "the maintenance window's cutoff passed", "cutoff"
    if stop_reason is not None:
        if running:
            return Decision((), "running", stop_reason, stopped_by=stopped_by)
        failed = stopped_by in ("threshold", "canary")
        final = _final(order, outcomes, failed)
        return Decision((), final, stop_reason, tuple(pending), stopped_by=stopped_by)
    if "before_start" in closed and pending and not attempted and not running:
        return Decision((), "awaiting_approval", GATES["before_start"][1], gate="before_start")
    canary_done = len(canaries) == canary > 0 and all(outcomes.get(s) != "running" for s in canaries)
    if "after_canary" in closed and canary_done and pending:
        return Decision((), "awaiting_approval", GATES["after_canary"][1], gate="after_canary")
    room = window - len(running)
    if canary and len(canaries) < canary:
        # Canary phase: only as many new servers as still make up the canary wave.
        room = min(room, canary - len(canaries))
    elif canary and any(outcomes.get(s) == "running" for s in canaries):
        room = 0  # the whole canary wave must succeed before the rest starts
    room = max(0, room)
    startable = [s for s in pending if s not in waiting]
    start = spread.pick(startable, running, room) if spread is not None else tuple(startable[:room])
    if not start and not running and not pending:
        return Decision((), _final(order, outcomes, errors > max_errors))
    return Decision(start, "running")


def _final(order: list[int], outcomes: dict[int, str], failed: bool) -> str:
    """Return how a job ended: "succeeded" only if every server's run did; a job whose threshold stopped
    it "failed"; otherwise "completed_with_failures" (a server failed, was refused, skipped as busy, or
    never started)."""
    if failed:
        return "failed"
    if all(outcomes.get(s) == "succeeded" for s in order):
        return "succeeded"
    return "completed_with_failures"


def waves_needed(
    servers: list[dict[str, Any]], window: int, canary: int, per_group: int | None, per_location: int | None
) -> int:
    """Return the least number of waves a job takes: its window, a canary wave of its own, and each spread
    limit (a placement group of 6 at 1 at a time is 6 waves, whatever the window)."""
    n = len(servers)
    waves = (
        (1 + math.ceil(max(0, n - canary) / max(1, window)))
        if canary and n > canary
        else math.ceil(n / max(1, window))
    )
    for key, limit in (("placement_group", per_group), ("location", per_location)):
        if limit:
            sizes: dict[Any, int] = {}
            for s in servers:
                if s.get(key) is not None:
                    sizes[s[key]] = sizes.get(s[key], 0) + 1
            waves = max(waves, *(math.ceil(v / limit) for v in sizes.values()), 0)
    return waves


def estimate(
    servers: int,
    steps_per_server: float,
    step_seconds: float,
    window: int,
    *,
    remaining: float,
    limit: float,
    refill_per_second: float,
    waves: int | None = None,
) -> dict[str, Any]:
    """Return the dry run's figures: API requests the job will spend and how long it should take.

    Requests per server: one POST per step, about 0.3 shared polls and state checks per step (measured by
    bench/polling.py: 1.2 requests per action all told), and 2 for the submit-time checks.
    """
    requests_total = servers * (steps_per_server * 1.3 + 2)
    waves = max(waves or 0, math.ceil(servers / max(1, window)))
    by_actions = waves * step_seconds
    deficit = max(0.0, requests_total - remaining)
    by_budget = deficit / refill_per_second if refill_per_second > 0 else 0.0
    return {
        "api_requests": round(requests_total),
        "budget_remaining": round(remaining),
        "budget_limit_per_hour": round(limit),
        "share_of_hourly_budget": round(requests_total / limit, 3) if limit else None,
        "estimated_seconds": round(max(by_actions, by_budget)),
        "bound_by": "rate budget" if by_budget > by_actions else "action durations",
        "waves": waves,
    }

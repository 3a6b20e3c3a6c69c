"""Injected faults: what can go wrong, how often, and the seeded dice that decide it.

Spec syntax (CLI ``--faults``, ``PUT /_fakecloud/config {"faults": "..."}``): comma-separated
``name=probability`` items, probability in [0, 1]::

    502=0.02,503=0.02,504=0.01,conflict=0.05,429=0.05,slow=0.01@3,action_error=0.03,acpi_ignore=0.2

=============  ===================================================================================
``502``        answer 502 with an HTML body (a gateway error, no JSON), request not processed
``503``        answer 503 ``unavailable``, request not processed
``504``        answer 504 ``timeout``, request not processed
``conflict``   answer 409 ``conflict`` to an action POST, request not processed (alias ``409``)
``429``        answer an extra 429 ``rate_limit_exceeded`` although the bucket has tokens
``slow=P@S``   process the request, then hold the answer back ``S`` seconds (default 2) of real time
``drop_answer``   an action POST starts its action (201), then the connection is closed without a byte
               of answer: the client sees "connection aborted" although the action runs
``action_error``  an action POST succeeds but its action ends in ``error``
               (``action_failed`` "Action failed" or ``unknown_error`` "Unknown Error", seeded)
``acpi_ignore``   fraction of servers whose guest ignores ACPI (``shutdown``/``reboot`` do nothing);
               which servers is fixed by the seed and the server id
=============  ===================================================================================

``502``/``503``/``504``/``429``/``conflict`` are drawn with one die per request, before any processing, so a
faulted request has no side effect. ``drop_answer`` is the opposite: its die is thrown only after an action
POST has started its action, so the side effect is complete and only the answer is lost (refused POSTs, 4xx,
are answered as usual). ``PUT /_fakecloud/config {"drop_answer_next": N}`` drops the next N such answers for
certain, without dice. ``none`` or an empty spec turns every fault off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = ["ACTION_ERRORS", "FaultDice", "FaultSpec", "RequestFault", "parse_faults"]

RequestFault = Literal["502", "503", "504", "429", "conflict"]

# Codes a failed action carries: the SPEC example and the one seen in the wild (reference §3.1).
ACTION_ERRORS: tuple[tuple[str, str], ...] = (
    ("action_failed", "Action failed"),
    ("unknown_error", "Unknown Error"),
)

# spec name -> FaultSpec attribute
_NAMES = {
    "502": "bad_gateway",
    "503": "unavailable",
    "504": "timeout",
    "conflict": "conflict",
    "409": "conflict",
    "429": "rate_limit",
    "slow": "slow",
    "drop_answer": "drop_answer",
    "action_error": "action_error",
    "acpi_ignore": "acpi_ignore",
}
_CANONICAL = ("502", "503", "504", "conflict", "429", "slow", "drop_answer", "action_error", "acpi_ignore")
DEFAULT_SLOW_SECONDS = 2.0


@dataclass(frozen=True)
class FaultSpec:
    """Probabilities of each fault; all zero (the default) means a well-behaved API."""

    bad_gateway: float = 0.0
    unavailable: float = 0.0
    timeout: float = 0.0
    conflict: float = 0.0
    rate_limit: float = 0.0
    slow: float = 0.0
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    drop_answer: float = 0.0
    action_error: float = 0.0
    acpi_ignore: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "slow_seconds":
                if not value >= 0:
                    raise ValueError(f"slow seconds must be >= 0, got {value!r}")
            elif not 0.0 <= value <= 1.0:
                name = next(n for n in _CANONICAL if _NAMES[n] == f.name)
                raise ValueError(f"fault {name!r}: probability must be within [0, 1], got {value!r}")

    @property
    def request_faults(self) -> bool:
        """True when any per-request die has to be thrown."""
        return bool(self.bad_gateway or self.unavailable or self.timeout or self.conflict or self.rate_limit)

    def to_dict(self) -> dict[str, float]:
        """Return the spec as ``{spec name: probability}`` plus ``slow_seconds``."""
        out = {name: float(getattr(self, _NAMES[name])) for name in _CANONICAL}
        out["slow_seconds"] = float(self.slow_seconds)
        return out

    def __str__(self) -> str:
        items = []
        for name in _CANONICAL:
            value = getattr(self, _NAMES[name])
            if value:
                items.append(f"{name}={value:g}" + (f"@{self.slow_seconds:g}" if name == "slow" else ""))
        return ",".join(items) or "none"

    def merged(self, changes: str | dict[str, Any] | FaultSpec | None) -> FaultSpec:
        """Return a copy with ``changes`` applied (a spec string replaces everything; a dict merges)."""
        if changes is None:
            return self
        if isinstance(changes, FaultSpec):
            return changes
        if isinstance(changes, str):
            return parse_faults(changes)
        if not isinstance(changes, dict):
            raise ValueError("faults must be a spec string or an object of {name: probability}")
        updates: dict[str, float] = {}
        for name, value in changes.items():
            if name == "slow_seconds":
                updates["slow_seconds"] = _number(name, value)
            elif name in _NAMES:
                updates[_NAMES[name]] = _number(name, value)
            else:
                raise ValueError(_unknown(name))
        return replace(self, **updates)


def _unknown(name: str) -> str:
    return f"unknown fault {name!r}; known faults: {', '.join(_CANONICAL)} (409 is an alias of conflict)"


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"fault {name!r}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"fault {name!r}: expected a number, got {value!r}") from None


def parse_faults(spec: str | dict[str, Any] | FaultSpec | None) -> FaultSpec:
    """Parse a fault spec (string, dict or FaultSpec; None or "none" = no faults); raise ValueError."""
    if spec is None:
        return FaultSpec()
    if isinstance(spec, FaultSpec):
        return spec
    if isinstance(spec, dict):
        return FaultSpec().merged(spec)
    text = spec.strip()
    if text.lower() in ("", "none", "off"):
        return FaultSpec()
    values: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq:
            raise ValueError(f"fault item {item!r} must look like name=probability, e.g. 503=0.02")
        if name not in _NAMES:
            raise ValueError(_unknown(name))
        raw, at, seconds = raw.partition("@")
        if at:
            if name != "slow":
                raise ValueError(f"only 'slow' takes @seconds (e.g. slow=0.01@3), not {name!r}")
            values["slow_seconds"] = _number("slow seconds", seconds.strip())
        values[_NAMES[name]] = _number(name, raw.strip())
    return FaultSpec(**values)


class FaultDice:
    """The seeded ``random.Random`` that decides every fault; callers hold the backend lock."""

    def __init__(self, seed: int | str | None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def request_fault(self, spec: FaultSpec, *, action_post: bool) -> RequestFault | None:
        """Throw one die for this request: a fault to answer with instead of processing it, or None."""
        if not spec.request_faults:
            return None
        roll = self.rng.random()
        table: tuple[tuple[RequestFault, float], ...] = (
            ("502", spec.bad_gateway),
            ("503", spec.unavailable),
            ("504", spec.timeout),
            ("429", spec.rate_limit),
            ("conflict", spec.conflict if action_post else 0.0),
        )
        for fault, probability in table:
            if roll < probability:
                return fault
            roll -= probability
        return None

    def slow_seconds(self, spec: FaultSpec) -> float:
        """Return how long to hold this answer back (0 when the slow fault does not fire)."""
        if spec.slow and self.rng.random() < spec.slow:
            return spec.slow_seconds
        return 0.0

    def drop_answer(self, spec: FaultSpec) -> bool:
        """Return whether to lose the answer of an action POST that has just started its action."""
        # No die while the fault is off, so a spec without it keeps the seeded sequence it always had.
        return bool(spec.drop_answer) and self.rng.random() < spec.drop_answer

    def action_error(self, spec: FaultSpec) -> tuple[str, str] | None:
        """Return ``(code, message)`` if a new action shall fail, else None."""
        if spec.action_error and self.rng.random() < spec.action_error:
            return self.rng.choice(ACTION_ERRORS)
        return None

    def acpi_draw(self, server_id: int) -> float:
        """Return a number in [0, 1) fixed by the seed and the server id; below acpi_ignore = ignores ACPI."""
        # Independent of creation order and of how many dice were thrown before.
        return random.Random(f"acpi:{self.seed}:{server_id}").random()

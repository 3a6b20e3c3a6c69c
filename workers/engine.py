"""Starting a step's action exactly once, whatever the delivery count: the plain functions under the tasks.

``start_action`` is called by the action tasks and by the monitor (for the forced power-off after an
ignored ACPI shutdown). It re-attaches to an action the ledger already knows, looks for an action an
earlier attempt may have started before it posts again, and posts at most once per attempt otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from .client import HcloudClient
from .durations import Durations
from .errors import APIError, Blocked, RateBudgetExhausted, StepInProgress, TransportError
from .ledger import Ledger
from .retry_policy import RetryPolicy, is_ambiguous
from .sealing import seal
from .server_actions import ServerAction
from .waits import WaitStore

__all__ = ["Cadence", "Engine", "find_started", "start_action"]

STEP_LABEL = "hcloud-flow/step"
# How far before our own "posting" stamp an action may have started and still count as ours: covers
# clock skew between us and the API, and no more, so an earlier step's action is never mistaken for ours.
CLOCK_SKEW = 5.0
LOST_NOTICE = "root password lost: the answer that carried it was cut off; reset the password again"


@dataclass(frozen=True)
class Cadence:
    """How often the monitor polls a wait: soon after it starts, then backing off to a cap."""

    first: float = 1.0
    growth: float = 1.5
    cap: float = 10.0

    def interval(self, polls: int) -> float:
        """Return the pause before poll number ``polls + 1``."""
        return min(self.cap, self.first * self.growth**polls)


@dataclass
class Engine:
    """Everything a step or the monitor needs, built once per process at the edge (workers/runtime.py)."""

    client: HcloudClient
    redis: redis.Redis
    ledger: Ledger
    waits: WaitStore
    secret_key: str | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    cadence: Cadence = field(default_factory=Cadence)
    # Long enough for one request with its retries to answer; short, so a dead claimant's claim lapses
    # before its message is delivered again. Renewed before every attempt.
    claim_ttl: float = 40.0
    shutdown_grace: float = 60.0
    deadlines: dict[str, float] = field(default_factory=dict)
    max_locked_tries: int = 20
    post_policy: RetryPolicy = field(default_factory=RetryPolicy)
    durations: Durations | None = None

    def deadline_for(self, action: ServerAction, override: float | None) -> float:
        """Return the seconds a step of this action may take: override, configured, or the table's."""
        if override is not None:
            return float(override)
        return float(self.deadlines.get(action.name, action.deadline))


def parse_time(value: str | None) -> float | None:
    """Return the UNIX time of an RFC 3339 timestamp from the API."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def find_started(
    client: HcloudClient, server_id: int, action: ServerAction, since: float, step_key: str
) -> dict[str, Any] | None:
    """Return the API answer of an action this step started at or after ``since``, if there is one.

    The server's newest actions are checked for our command; for create_image, the image carrying our
    step label is found too, so the step can report it as the POST answer would have.
    """
    for candidate in client.list_server_actions(server_id, sort="id:desc"):
        started = parse_time(candidate.get("started"))
        if (
            candidate.get("command") == action.command
            and started is not None
            and started >= since - CLOCK_SKEW
        ):
            answer: dict[str, Any] = {"action": candidate}
            if action.name == "create_image":
                images = client.list_images(label_selector=f"{STEP_LABEL}={step_key}")
                answer["image"] = images[0] if images else None
            return answer
    return None


def _running_action(client: HcloudClient, server_id: int) -> int | None:
    running = client.list_server_actions(server_id, status=["running"], sort="id:desc")
    return int(running[0]["id"]) if running else None


def outputs_of(engine: Engine, answer: dict[str, Any]) -> dict[str, Any]:
    """Return what a step reports of its POST answer: the image, a sealed root password."""
    out: dict[str, Any] = {}
    if answer.get("image"):
        image = answer["image"]
        out["image"] = {"id": image["id"], "description": image.get("description"), "type": image.get("type")}
    if "root_password" in answer:
        sealed = seal(answer["root_password"], engine.secret_key)
        if sealed is not None:
            out["root_password"] = sealed
    return out


def start_action(
    engine: Engine, action: ServerAction, server_id: int, params: dict[str, Any], step_key: str
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Start the step's action once; return (action, outputs, attached).

    ``attached`` is True when the action was found rather than posted (a redelivered step). Raises
    Blocked on 423 locked, StepInProgress when another delivery holds the claim, APIError otherwise.
    """
    record = engine.ledger.get(step_key)
    if record.action_id is not None:
        return engine.client.get_action(record.action_id), record.outputs or {}, True
    token = engine.ledger.claim(step_key, engine.claim_ttl)
    if token is None:
        raise StepInProgress(step_key)
    try:
        if record.posting_since is not None:
            # An earlier delivery died between stamping and recording: it may have started the action.
            found = find_started(engine.client, server_id, action, record.posting_since, step_key)
            if found is not None:
                return _record(engine, step_key, server_id, found, attached=True, secret=action.secret)
        return _post(engine, action, server_id, params, step_key, token)
    finally:
        engine.ledger.release(step_key, token)


def _post(
    engine: Engine, action: ServerAction, server_id: int, params: dict[str, Any], step_key: str, claim: str
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    body = dict(params)
    if action.name == "create_image":
        # The label finds the image again if our answer is lost; it carries the step id, nothing secret.
        body["labels"] = {**(body.get("labels") or {}), STEP_LABEL: step_key}
    policy = engine.post_policy
    last: Exception | None = None
    for attempt in range(1, policy.attempts + 1):
        since = engine.clock()
        engine.ledger.renew(step_key, claim, engine.claim_ttl)
        engine.ledger.mark_posting(step_key, since)
        try:
            answer = getattr(engine.client, action.name)(server_id, **body)
            return _record(engine, step_key, server_id, answer, attached=False, secret=action.secret)
        except RateBudgetExhausted:
            # Nothing was sent: the next delivery need not look for an action this attempt started.
            engine.ledger.clear_posting(step_key)
            raise
        except APIError as exc:
            if exc.code == "locked":
                engine.ledger.clear_posting(step_key)  # refused: nothing of ours was started
                raise Blocked(server_id, _running_action(engine.client, server_id)) from exc
            if not is_ambiguous(exc):
                raise
            last = exc
        except TransportError as exc:
            last = exc
        # The answer was lost: the action may have started anyway. Never post blindly a second time.
        stamp = engine.ledger.get(step_key).posting_since or since
        found = find_started(engine.client, server_id, action, stamp, step_key)
        if found is not None:
            return _record(engine, step_key, server_id, found, attached=True, secret=action.secret)
        engine.sleep(policy.backoff(attempt))
    assert last is not None
    raise last


def _record(
    engine: Engine, step_key: str, server_id: int, answer: dict[str, Any], *, attached: bool, secret: bool
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    action = answer["action"]
    outputs = outputs_of(engine, answer)
    if attached and secret and "root_password" not in outputs:
        # The API hands a password out once, in the POST answer that this step never read.
        outputs["root_password"] = {"sealed": None, "notice": LOST_NOTICE}
    engine.ledger.record_action(step_key, int(action["id"]), outputs, server_id=server_id)
    return action, outputs, attached

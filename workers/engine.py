"""Starting a step's action at most once, whatever fails and however often the step is delivered.

``start_action`` is called by the action tasks and by the monitor (for the forced power-off after an
ignored ACPI signal). Its rules, in the order the code meets them:

1. The ledger already holds the step's action: re-attach to it (a redelivered step).
2. Before a POST, note a bound: an action id that no action of this step can be older than (action ids
   only grow). It is the newest action id the project saw in the last few seconds, or the previous step's
   action on this server, or, when neither is at hand, the server's newest action read from the API.
   The bound goes into the ledger before the POST goes out, and stays there until the POST's outcome is
   known.
3. A POST that failed before it was sent, or that the API refused as "not processed", is sent again.
4. A POST whose answer was lost (reset or aborted after sending, read timeout, gateway error) may have
   started the action: the server's newest actions are searched for one newer than the bound with our
   command. Found: the step attaches to it. Not found: the POST is sent again.
5. A 423 ``locked`` after such a doubt, where the running action is newer than the bound and has our
   command, is our own action: attach. Any other 423 means someone else's action runs: ``Blocked``.

No clock is compared with the API's: identity rests on ids alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from .action_ids import HighWater
from .client import HcloudClient
from .durations import Durations
from .errors import APIError, Blocked, HcloudFlowError, RateBudgetExhausted, StepInProgress, TransportError
from .labels import STEP_LABEL
from .ledger import Ledger, StepRecord
from .retry_policy import Outcome, RetryPolicy, classify
from .sealing import seal
from .server_actions import ServerAction
from .wait_state import Cadence
from .waits import WaitStore

__all__ = ["Cadence", "Engine", "Started", "find_own", "start_action"]

# A claim younger than this is not renewed before a POST attempt (its TTL, claim_ttl, is far longer).
_RENEW_AFTER = 1.0
LOST_NOTICE = "root password lost: the answer that carried it was cut off; reset the password again"


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
    high_water: HighWater | None = None
    project: str = "default"  # the project whose token the client holds (workers/projects.py)

    def deadline_for(self, action: ServerAction, override: float | None) -> float:
        """Return the seconds a step of this action may take: override, configured, or the table's."""
        if override is not None:
            return float(override)
        return float(self.deadlines.get(action.name, action.deadline))


@dataclass(frozen=True)
class Started:
    """The action a step started (or found again), and what the step reports of its POST answer."""

    action: dict[str, Any]
    outputs: dict[str, Any]
    attached: bool  # found rather than posted by this call


def find_own(
    client: HcloudClient, server_id: int, action: ServerAction, bound: int, step_key: str
) -> dict[str, Any] | None:
    """Return the API answer of this step's action if the API started one: newer than ``bound``, our command.

    For an action that makes an image, the image carrying the step's label is looked up too, so the step
    reports it as the POST answer would have.
    """
    newest = client.list_server_actions(server_id, sort="id:desc")
    ours = [a for a in newest if int(a["id"]) > bound and a.get("command") == action.command]
    if not ours:
        return None
    # Our step posts one action at a time: the oldest newer than the bound is the one we started.
    answer: dict[str, Any] = {"action": min(ours, key=lambda a: int(a["id"]))}
    if action.makes_image:
        images = client.list_images(label_selector=f"{STEP_LABEL}={step_key}")
        answer["image"] = images[0] if images else None
    return answer


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
    engine: Engine,
    action: ServerAction,
    server_id: int,
    params: dict[str, Any],
    step_key: str,
    *,
    after: int | None = None,
    record: StepRecord | None = None,
    stop: HcloudFlowError | None = None,
) -> Started:
    """Start the step's action once, or find the one it already started.

    ``after`` is an action id known to be older than anything this step can start (the previous step's
    action on the same server), which saves reading the server's newest action. ``record`` is the step's
    ledger record as the caller read it a moment ago, if it did. With ``stop`` (the step's run was
    cancelled), nothing is posted: an action an earlier delivery started is found, else ``stop`` is raised.
    Raises Blocked on a 423 by someone else's action, StepInProgress when another delivery holds the step's
    claim, and the request's error otherwise.
    """
    if record is None:
        record = engine.ledger.get(step_key)
    if record.action_id is not None:
        return Started(engine.client.get_action(record.action_id), record.outputs or {}, True)
    # The claim, the record read again under it, and the project's action-id mark, in one round trip. The
    # record read before the claim may be stale: another delivery of this step may have posted, recorded
    # its action and let go of its claim since. Only what is read while we hold the claim tells whether to
    # post.
    pipe = engine.redis.pipeline(transaction=False)
    if engine.high_water is not None:
        engine.high_water.stage_read(pipe)
    token, record, staged = engine.ledger.claim_and_get(step_key, engine.claim_ttl, pipe)
    if token is None:
        raise StepInProgress(step_key)
    claimed_at = engine.clock()
    try:
        if record.action_id is not None:
            return Started(engine.client.get_action(record.action_id), record.outputs or {}, True)
        bound = record.posting_after
        if bound is not None:
            # An earlier delivery died between noting its bound and recording its action: it may have
            # started the action.
            found = find_own(engine.client, server_id, action, bound, step_key)
            if found is not None:
                return _record(engine, step_key, server_id, found, attached=True, secret=action.secret)
        if stop is not None:
            raise stop
        if bound is None:
            fresh = None
            if engine.high_water is not None and staged:
                fresh = engine.high_water.fresh_from(staged[0], engine.clock())
            bound = _bound(engine, server_id, after, fresh)
            engine.ledger.mark_posting(step_key, bound)
        doubt = record.posting_after is not None
        return _post(engine, action, server_id, params, step_key, token, bound, doubt=doubt, since=claimed_at)
    finally:
        engine.ledger.release(step_key, token)


def _bound(engine: Engine, server_id: int, after: int | None, fresh: int | None) -> int:
    """Return an action id that every action started from now on is newer than; ``fresh`` is the project's
    action-id mark when it was seen lately (see HighWater)."""
    known = max((b for b in (fresh, after) if b is not None), default=None)
    if known is not None:
        return known
    newest = engine.client.list_server_actions(server_id, sort="id:desc", per_page=1)
    return int(newest[0]["id"]) if newest else 0


def _post(
    engine: Engine,
    action: ServerAction,
    server_id: int,
    params: dict[str, Any],
    step_key: str,
    claim: str,
    bound: int,
    *,
    doubt: bool,
    since: float,
) -> Started:
    """POST until the outcome is known; ``doubt`` says an earlier attempt may have started the action.

    ``since`` is when the claim was last taken or renewed.
    """
    body = dict(params)
    if action.makes_image:
        # The label finds the image again if our answer is lost; it carries the step id, nothing secret.
        body["labels"] = {**(body.get("labels") or {}), STEP_LABEL: step_key}
    policy = engine.post_policy
    last: Exception | None = None
    for attempt in range(1, policy.attempts + 1):
        if engine.clock() - since > _RENEW_AFTER:
            # Reads before this attempt (a bound, a search) took a while: renew the claim so that it lapses
            # soon only if we die. Just taken or renewed, it needs no round trip.
            engine.ledger.renew(step_key, claim, engine.claim_ttl)
            since = engine.clock()
        try:
            answer = getattr(engine.client, action.name)(server_id, **body)
            return _record(engine, step_key, server_id, answer, attached=False, secret=action.secret)
        except RateBudgetExhausted:
            if not doubt:
                # Nothing was sent: the next delivery need not look for an action this one started.
                engine.ledger.clear_posting(step_key)
            raise
        except APIError as exc:
            if exc.code == "locked":
                return _on_locked(engine, action, server_id, step_key, bound, exc, doubt=doubt)
            if classify(exc) is not Outcome.AMBIGUOUS:
                if not doubt:
                    engine.ledger.clear_posting(step_key)  # refused: the API did nothing
                raise
            last = exc
        except TransportError as exc:
            if classify(exc) is not Outcome.AMBIGUOUS:
                raise  # never sent, already retried by the client: nothing of ours exists
            last = exc
        # The answer was lost after the request may have reached the API: look before posting again.
        doubt = True
        found = find_own(engine.client, server_id, action, bound, step_key)
        if found is not None:
            return _record(engine, step_key, server_id, found, attached=True, secret=action.secret)
        engine.sleep(policy.backoff(attempt))
    assert last is not None
    raise last


def _on_locked(
    engine: Engine,
    action: ServerAction,
    server_id: int,
    step_key: str,
    bound: int,
    exc: APIError,
    *,
    doubt: bool,
) -> Started:
    running = engine.client.list_server_actions(server_id, status=["running"], sort="id:desc")
    blocker = running[0] if running else None
    if (
        doubt
        and blocker is not None
        and int(blocker["id"]) > bound
        and blocker.get("command") == action.command
    ):
        # Our own earlier POST started it and its answer was lost: this 423 is our action running.
        found = find_own(engine.client, server_id, action, bound, step_key) or {"action": blocker}
        return _record(engine, step_key, server_id, found, attached=True, secret=action.secret)
    if not doubt:
        engine.ledger.clear_posting(step_key)  # refused: nothing of ours was started
    raise Blocked(server_id, int(blocker["id"]) if blocker else None) from exc


def _record(
    engine: Engine, step_key: str, server_id: int, answer: dict[str, Any], *, attached: bool, secret: bool
) -> Started:
    action = answer["action"]
    outputs = outputs_of(engine, answer)
    if secret and "root_password" not in answer:
        # The API hands a password out once, in the POST answer that this step never read.
        outputs["root_password"] = {"sealed": None, "notice": LOST_NOTICE}
    engine.ledger.record_action(step_key, int(action["id"]), outputs, server_id=server_id)
    if engine.high_water is not None:
        engine.high_water.observe(int(action["id"]), engine.clock())
    return Started(action, outputs, attached)

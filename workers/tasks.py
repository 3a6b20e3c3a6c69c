"""One Celery task per server action, under stable public names (``hcloud_flow.<action>``).

Each task is thin: it unpacks JSON arguments, starts the action through ``engine.start_action`` and
parks the rest of its chain with the monitor. Arguments: ``target`` (a server id, a server name, or the
result of the previous step in a chain) and the action's keyword parameters, plus the step options
``deadline`` (seconds), ``wait_state`` (default true), ``force`` and ``grace`` (shutdown), ``run_id``
and ``step``. The result is JSON: server id, action id, command, outputs (sealed secrets only).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import replace
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Ignore

from .app import app, engine, hooks, run_store
from .continuation import check_continuable, request_fields
from .engine import Engine, start_action
from .errors import (
    ActionFailed,
    APIError,
    BadInput,
    Blocked,
    HcloudFlowError,
    RateBudgetExhausted,
    RunCancelled,
    ServerBusy,
    StepInProgress,
    TransportError,
)
from .ids import is_id
from .projects import check_project_name
from .retry_policy import Outcome, classify
from .run_store import chain_holder
from .server_actions import (
    ACTIONS,
    STEP_OPTIONS,
    TASK_NAMES,
    ServerAction,
    check_step_options,
    validate_params,
)
from .wait_state import MIN_PAUSE, Phase, Wait

log = logging.getLogger(__name__)

__all__ = ["TASK_NAMES", "history_after", "step_engine", "took_over", *ACTIONS]

# Ledger statuses the monitor writes just before it continues (or fails) the chain of a parked step.
FINISHED_STEP = frozenset({"success", "failed"})
# Another delivery of the same step is posting right now: look again soon, a bounded number of times.
_IN_PROGRESS_RETRY = 3.0


def in_progress_tries(claim_ttl: float) -> int:
    """Return how many times a step looks again while another delivery holds its claim: until well past
    the claim's lifetime, by when a holder that died has let it lapse. A fixed 60 tries (3 min) ran out
    before a claim with a long request timeout (up to 12 min) did, and the step failed while the action
    its dead holder may have started ran on (an outside reading)."""
    return max(60, math.ceil(claim_ttl / _IN_PROGRESS_RETRY) + 10)


# The shared budget is empty: the step is parked and resent when it has refilled (see budget_pause); a step
# gives up after waiting this long for budget in all.
_BUDGET_PATIENCE = 3600.0
# Steps that met a storm of "try again" answers through all of the client's retries come back this often.
_TRANSIENT_TRIES = 8
_BUDGET_PAUSE_CAP = 30.0
# A 423 whose blocking action ended before we looked: send the step again after this pause.
_UNBLOCKED_PAUSE = 1.0


class _NothingStarted(HcloudFlowError):
    """An earlier delivery of the step, which may have posted, started no action (start_action's ``stop``)."""


class _HandedOver(Exception):
    """The step's message is done with, and no result is due from this task: its wait is parked (the monitor
    continues the chain), or the monitor already finished it. Turned into Celery's ``Ignore`` in ``run``."""


def resolve_target(eng: Engine, target: Any) -> tuple[int, dict[str, Any] | None]:
    """Return (server id, previous step's result) from a task's first argument."""
    if isinstance(target, dict):
        server_id = target.get("server_id")
        if isinstance(server_id, bool) or not isinstance(server_id, int) or server_id <= 0:
            raise BadInput("the previous step's result has no server_id; start the chain with a server id")
        return server_id, target
    if isinstance(target, bool) or target is None:
        raise BadInput("give a server id or name as the first argument")
    if is_id(target):
        if int(target) <= 0:
            raise BadInput(f"a server id is a positive number, not {target!r}")
        return int(target), None
    if isinstance(target, str) and target.strip():
        found = eng.client.list_servers(name=target)
        if not found:
            raise BadInput(f"no server is named {target!r}")
        return int(found[0]["id"]), None
    raise BadInput(f"a server must be an id or a name, not {target!r}"[:200])


def history_after(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return a step's history: the previous step's, then the previous step's result itself."""
    if not previous:
        return []
    return [*previous.get("history", []), {k: v for k, v in previous.items() if k != "history"}]


def step_engine(project: Any, target: Any) -> Engine:
    """Return the engine of a step's project: named by the step, else by the previous step's result (a
    chain written by hand names it on its first step only), else the default project."""
    if project is None and isinstance(target, dict):
        project = target.get("project")
    return engine(None if project is None else check_project_name(project))


def run_action(task: Task, action: ServerAction, target: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Run one step at its run's budget priority (fleet jobs spend as "bulk")."""
    priority = options.get("priority")
    if priority not in (None, "interactive", "bulk"):
        raise BadInput("priority must be interactive or bulk", "priority")
    eng = step_engine(options.get("project"), target)  # that project's token and budget
    # No sleeping for budget inside the task: a step short of budget is parked in Redis (Phase.LATER).
    with eng.client.priority_scope(priority, patience=0.0):
        return _run_action(eng, task, action, target, options)


def _previous_action(previous: dict[str, Any] | None, server_id: int) -> int | None:
    """Return the previous step's action on the same server: older than anything this step starts."""
    if not previous or previous.get("server_id") != server_id:
        return None
    ids = [previous.get("action_id"), previous.get("force_action_id")]
    known = [int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    return max(known, default=None)


def _run_action(
    eng: Engine, task: Task, action: ServerAction, target: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """Start the step's action and park its wait; return at once only if nothing is left to wait for."""
    step_key = task.request.id
    took_over(eng, task.request.parent_id)
    record = eng.ledger.get(step_key)
    if record.status in FINISHED_STEP:
        # A duplicate delivery of a step the monitor already finished (it continued the chain then):
        # re-parking it would wait, and maybe force a power off, all over again.
        raise _HandedOver()
    step_opts = check_step_options({k: options.pop(k) for k in list(options) if k in STEP_OPTIONS})
    params = validate_params(action, options)
    check_continuable(task.request)
    request = request_fields(task.request, task.name)
    server_id, run_id, step = 0, step_opts.get("run_id"), step_opts.get("step") or action.name

    def park(phase: Phase, pause: float, blocker: int | None = None) -> NoReturn:
        """Park the step to be sent again later (see _later) and let go of its message."""
        _later(
            eng, action, server_id, step, step_key, request, run_id, phase=phase, pause=pause, blocker=blocker
        )
        raise _HandedOver()

    try:
        server_id, previous = resolve_target(eng, target)
        run_id = run_id or (previous or {}).get("run_id")
        # step_started raises RunCancelled when the run was cancelled. An earlier delivery of this step may
        # have posted its action all the same (the ledger holds its id or a bound): that action is found and
        # waited out, nothing new is posted, and the run stops before its next step. A step the run did not
        # plan is an action task of its own and takes the server's lock like one.
        stop: RunCancelled | None = None
        try:
            ours = run_id is not None and hooks().step_started(run_id, step_key)
        except RunCancelled as exc:
            if record.action_id is None and record.posting_after is None:
                raise
            ours, stop = True, exc
        if not ours:
            run_id = None
            hold_server(server_id, task.request, eng.deadline_for(action, step_opts.get("deadline")))
        skip = step_opts.get("skip_if_status")

        def start(stop_with: HcloudFlowError | None) -> Any:
            after = _previous_action(previous, server_id)
            return start_action(
                eng, action, server_id, params, step_key, after=after, record=record, stop=stop_with
            )

        if skip and record.action_id is None and stop is None:
            # Only a step that started no action is skipped. Its own action (an earlier delivery may have
            # posted it, and it may be what brought the server to that status) is looked for first, under the
            # step's claim; only if there is none does the server's status now decide.
            try:
                started = start(_NothingStarted(step_key))
            except _NothingStarted:
                status = eng.client.get_server(server_id)["status"]
                if status == skip:
                    skipped = _skipped(action, server_id, step, run_id, previous, status)
                    return {**skipped, "project": eng.project}
                started = start(None)
        else:
            started = start(stop)
    except StepInProgress as exc:
        tries = in_progress_tries(eng.claim_ttl)
        raise task.retry(countdown=_IN_PROGRESS_RETRY, max_retries=tries, exc=exc) from exc
    except RateBudgetExhausted as exc:
        eng.ledger.bump(step_key, "budget_waits")
        if eng.clock() - eng.ledger.since(step_key, "budget_since", eng.clock()) > _BUDGET_PATIENCE:
            raise
        park(Phase.LATER, budget_pause(exc.wait, exc.rate, eng.waits.later_count(), random.random()))
    except Blocked as exc:
        park(*_blocked_wait(eng, exc, server_id, step_key))
    except (APIError, TransportError) as exc:
        # The API said "nothing was done, try again" (or could not be reached) through all of the client's
        # retries: a storm, not an answer. The step comes back later, a bounded number of times; anything
        # that may have acted is never retried blindly (the ledger's bound makes the next try look first).
        tries = eng.ledger.bump(step_key, "transient_waits")
        if classify(exc) not in (Outcome.NOT_SENT, Outcome.NOT_PROCESSED) or tries > _TRANSIENT_TRIES:
            raise
        pause = min(_BUDGET_PAUSE_CAP, 2.0**tries) * (1.0 + random.random())
        # Said at once: the step is over only after all its tries, minutes from now.
        log.warning(
            "step %s (%s on server %s) could not reach the API: %s; trying again in %.0f s (%d of %d)",
            step_key,
            step,
            server_id,
            exc,
            pause,
            tries,
            _TRANSIENT_TRIES,
        )
        park(Phase.LATER, pause)
    act = started.action
    history = history_after(previous)
    result = {
        "server_id": server_id,
        "step": step,
        "action": action.name,
        "action_id": int(act["id"]),
        "command": act.get("command"),
        "status": act["status"],
        "outputs": started.outputs,
        "attached": started.attached,
        "run_id": run_id,
        "project": eng.project,
        "history": history,
    }
    if act["status"] == "error":
        err = act.get("error") or {}
        raise ActionFailed(
            server_id,
            step,
            int(act["id"]),
            err.get("code", "unknown_error"),
            err.get("message", ""),
            action.failure_hint,
        )
    wait_state = bool(step_opts.get("wait_state", True))
    if act["status"] == "success" and (action.target is None or not wait_state):
        # Not a FINISHED_STEP status: should this delivery die before Celery sends the next step, the
        # redelivery must return this result again, not drop the chain.
        eng.ledger.update(step_key, status="returned", progress=100)
        return result
    now = eng.clock()
    image = started.outputs.get("image") or {}
    expected = eng.durations.expected(act.get("command")) if eng.durations else None
    wait = Wait(
        id=step_key,
        action=action.name,
        step=step,
        server_id=server_id,
        phase=Phase.ACTION,
        started=now,
        deadline=now + eng.deadline_for(action, step_opts.get("deadline")),
        next=now,
        action_id=int(act["id"]),
        wait_state=wait_state,
        force=bool(step_opts.get("force", True)),
        grace=eng.shutdown_grace if step_opts.get("grace") is None else float(step_opts["grace"]),
        expected=expected,
        progress=int(act.get("progress") or 0),
        image_id=int(image["id"]) if image.get("id") else None,
        run_id=run_id,
        result=result,
        request=request,
    )
    # First look: at the expected end when a duration was learned, else soon; never past the cap.
    first = min(eng.cadence.cap, expected if expected is not None else eng.cadence.first)
    eng.waits.park(replace(wait, next=now + max(MIN_PAUSE, first)))
    # The monitor now owns the rest of the chain: no result yet, no next step from Celery.
    raise _HandedOver()


def budget_pause(wait: float, rate: float | None, waiting: int, rnd: float) -> float:
    """Return how long a step short of budget stays parked.

    At least the refill wait the budget named; and since ``waiting`` other steps are parked for it too,
    spread at random over the time the refill takes to serve them all, so they do not all come back for
    the same token.
    """
    spread = waiting / rate if rate else 0.0
    return min(_BUDGET_PAUSE_CAP, max(wait, MIN_PAUSE) + rnd * spread)


def took_over(eng: Engine, parent_id: str | None) -> None:
    """Tell the previous step's hand-off watch that its next step started (see wait_state HANDOFF)."""
    if parent_id:
        parent = eng.waits.get(parent_id)
        if parent is not None and parent.phase is Phase.HANDOFF:
            eng.waits.remove(parent_id)


def hold_server(server_id: int, request: Any, ttl: float) -> None:
    """Take the server's lock for an action task sent outside a run, or refuse while a run holds it.

    The holder is the task's chain (its root id), so the steps of one user chain share the server.
    """
    me = chain_holder(request.root_id, request.id)
    store = run_store()
    holder = store.acquire(server_id, me, ttl + 60.0)
    if holder is not None and holder != me:
        raise ServerBusy(server_id, holder)
    if holder == me:
        store.refresh(server_id, me, ttl + 60.0)


def _skipped(
    action: ServerAction,
    server_id: int,
    step: str,
    run_id: str | None,
    previous: dict[str, Any] | None,
    status: str,
) -> dict[str, Any]:
    history = history_after(previous)
    return {
        "server_id": server_id,
        "step": step,
        "action": action.name,
        "action_id": None,
        "command": None,
        "status": "success",
        "skipped": True,
        "server_status": status,
        "outputs": {},
        "attached": False,
        "run_id": run_id,
        "history": history,
    }


def _later(
    eng: Engine,
    action: ServerAction,
    server_id: int,
    step: str,
    step_key: str,
    request: dict[str, Any],
    run_id: str | None,
    *,
    phase: Phase,
    pause: float,
    blocker: int | None = None,
) -> None:
    """Park the step to be sent again by whichever worker runs the monitor's next round.

    Nothing stays in this worker's memory: a Celery countdown would, unacknowledged, until the visibility
    timeout brought it back after a crash.
    """
    now = eng.clock()
    wait = Wait(
        id=step_key,
        action=action.name,
        step=step,
        server_id=server_id,
        phase=phase,
        started=now,
        deadline=now + eng.deadline_for(action, None),
        next=now + pause,
        action_id=blocker,
        run_id=run_id,
        request=request,
    )
    eng.waits.park(wait)


def _blocked_wait(
    eng: Engine, exc: Blocked, server_id: int, step_key: str
) -> tuple[Phase, float, int | None]:
    """Return how a step that met 423 locked waits: (phase, pause, blocking action); bounded in tries."""
    tries = eng.ledger.bump(step_key, "locked_tries")
    if tries > eng.max_locked_tries:
        raise APIError("locked", f"server {server_id} stayed locked through {tries - 1} waits", 423)
    if exc.action_id is None:
        # The blocking action ended between our POST and our look: send the step again shortly.
        return Phase.LATER, _UNBLOCKED_PAUSE, None
    return Phase.BLOCKED, eng.cadence.first, exc.action_id


class ActionTask(Task):
    """Base of the action tasks: a step that ends inside its task updates its run record here."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if not isinstance(retval, dict):
            return
        if retval.get("run_id"):
            hooks().step_succeeded(retval["run_id"], task_id, retval, last=not self.request.chain)
        elif not self.request.chain and retval.get("server_id"):
            run_store().release(retval["server_id"], chain_holder(self.request.root_id, self.request.id))

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        run_id = (kwargs or {}).get("run_id")
        if isinstance(exc, redis.RedisError | OSError):
            # Redis went away mid-step: the message was never acknowledged, so it comes back and the step
            # re-attaches. The run has not failed.
            return
        if run_id:
            hooks().step_failed(run_id, task_id, exc)
        elif not isinstance(exc, ServerBusy):
            server_id = _server_of(args)
            if server_id is not None:
                run_store().release(server_id, chain_holder(self.request.root_id, self.request.id))


def _server_of(args: Any) -> int | None:
    target = (args or [None])[0]
    if isinstance(target, dict):
        target = target.get("server_id")
    return int(target) if is_id(target) else None


def _make_task(action: ServerAction) -> Task:
    def run(self: Task, target: Any = None, *extra: Any, **options: Any) -> dict[str, Any]:
        if extra:  # refused here, not by Python as a TypeError nobody can read
            raise BadInput(
                f"{action.name} takes one argument (a server id or name, or the previous step's result) and "
                f"keyword options; got {1 + len(extra)} arguments"
            )
        try:
            return run_action(self, action, target, options)
        except _HandedOver:
            pass
        # Raised here, outside the handler, not where the step parked: Celery copies every frame of an
        # Ignore's traceback, twice (billiard's ExceptionInfo, with each frame's code positions), and from
        # deep in the step that was a quarter of a worker's CPU.
        raise Ignore()

    run.__name__ = action.name
    run.__doc__ = action.summary
    expected = (BadInput, ActionFailed, RunCancelled, ServerBusy)
    return app.task(bind=True, base=ActionTask, name=TASK_NAMES[action.name], throws=expected)(run)


power_on = _make_task(ACTIONS["power_on"])
power_off = _make_task(ACTIONS["power_off"])
reboot = _make_task(ACTIONS["reboot"])
reset = _make_task(ACTIONS["reset"])
shutdown = _make_task(ACTIONS["shutdown"])
reset_password = _make_task(ACTIONS["reset_password"])
enable_rescue = _make_task(ACTIONS["enable_rescue"])
disable_rescue = _make_task(ACTIONS["disable_rescue"])
create_image = _make_task(ACTIONS["create_image"])
rebuild = _make_task(ACTIONS["rebuild"])

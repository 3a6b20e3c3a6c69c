"""One Celery task per server action, under stable public names (``hcloud_flow.<action>``).

Each task is thin: it unpacks JSON arguments, starts the action through ``engine.start_action`` and
parks the rest of its chain with the monitor. Arguments: ``target`` (a server id, a server name, or the
result of the previous step in a chain) and the action's keyword parameters, plus the step options
``deadline`` (seconds), ``wait_state`` (default true), ``force`` and ``grace`` (shutdown), ``run_id``
and ``step``. The result is JSON: server id, action id, command, outputs (sealed secrets only).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore

from .app import app, engine, hooks
from .client import is_id
from .continuation import request_fields
from .engine import Engine, start_action
from .errors import (
    ActionFailed,
    APIError,
    BadInput,
    Blocked,
    RateBudgetExhausted,
    RunCancelled,
    StepInProgress,
)
from .monitor import new_wait
from .server_actions import (
    ACTIONS,
    STEP_OPTIONS,
    TASK_NAMES,
    ServerAction,
    check_step_options,
    validate_params,
)

__all__ = ["TASK_NAMES", *ACTIONS]

# Ledger statuses the monitor writes just before it continues (or fails) the chain of a parked step.
FINISHED_STEP = frozenset({"success", "failed"})
# Another delivery of the same step is posting right now: look again soon, a bounded number of times.
_IN_PROGRESS_RETRY = 3.0
_IN_PROGRESS_TRIES = 60
# The shared budget is empty: come back when it has refilled (bounded: about an hour at most).
_BUDGET_RETRY_CAP = 30.0
_BUDGET_TRIES = 120


def resolve_target(eng: Engine, target: Any) -> tuple[int, dict[str, Any] | None]:
    """Return (server id, previous step's result) from a task's first argument."""
    if isinstance(target, dict):
        if "server_id" not in target:
            raise BadInput("the previous step's result has no server_id; start the chain with a server id")
        return int(target["server_id"]), target
    if isinstance(target, bool) or target is None:
        raise BadInput("give a server id or name as the first argument")
    if is_id(target):
        return int(target), None
    if isinstance(target, str):
        found = eng.client.list_servers(name=target)
        if not found:
            raise BadInput(f"no server is named {target!r}")
        return int(found[0]["id"]), None
    raise BadInput(f"a server must be an id or a name, not {type(target).__name__}")


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "history"}


def run_action(task: Task, action: ServerAction, target: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Run one step at its run's budget priority (fleet jobs spend as "bulk")."""
    priority = options.get("priority")
    if priority not in (None, "interactive", "bulk"):
        raise BadInput("priority must be interactive or bulk", "priority")
    with engine().client.priority_scope(priority):
        return _run_action(task, action, target, options)


def _run_action(task: Task, action: ServerAction, target: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Start the step's action and park its wait; return at once only if nothing is left to wait for."""
    eng = engine()
    step_key = task.request.id
    if eng.ledger.get(step_key).status in FINISHED_STEP:
        # A duplicate delivery of a step the monitor already finished (it continued the chain then):
        # re-parking it would wait, and maybe force a power off, all over again.
        raise Ignore()
    step_opts = check_step_options({k: options.pop(k) for k in list(options) if k in STEP_OPTIONS})
    params = validate_params(action, options)
    try:
        server_id, previous = resolve_target(eng, target)
        run_id = step_opts.get("run_id") or (previous or {}).get("run_id")
        step = step_opts.get("step") or action.name
        if run_id:
            hooks().step_started(run_id, step_key)  # raises RunCancelled when the run was cancelled
        skip = step_opts.get("skip_if_status")
        if skip and eng.ledger.get(step_key).action_id is None:
            status = eng.client.get_server(server_id)["status"]
            if status == skip:
                return _skipped(action, server_id, step, run_id, previous, status)
        act, outputs, attached = start_action(eng, action, server_id, params, step_key)
    except StepInProgress as exc:
        raise task.retry(countdown=_IN_PROGRESS_RETRY, max_retries=_IN_PROGRESS_TRIES, exc=exc) from exc
    except RateBudgetExhausted as exc:
        countdown = min(max(exc.wait, 1.0), _BUDGET_RETRY_CAP)
        raise task.retry(countdown=countdown, max_retries=_BUDGET_TRIES, exc=exc) from exc
    except Blocked as exc:
        return _park_blocked(task, eng, exc, action, server_id, step, step_key)
    history = [*(previous or {}).get("history", []), _summary(previous)] if previous else []
    result = {
        "server_id": server_id,
        "step": step,
        "action": action.name,
        "action_id": int(act["id"]),
        "command": act.get("command"),
        "status": act["status"],
        "outputs": outputs,
        "attached": attached,
        "run_id": run_id,
        "history": history,
    }
    if act["status"] == "error":
        err = act.get("error") or {}
        raise ActionFailed(
            server_id, step, int(act["id"]), err.get("code", "unknown_error"), err.get("message", "")
        )
    target_state = action.target if step_opts.get("wait_state", True) else None
    if act["status"] == "success" and target_state is None:
        # Not a FINISHED_STEP status: should this delivery die before Celery sends the next step, the
        # redelivery must return this result again, not drop the chain.
        eng.ledger.update(step_key, status="returned", progress=100)
        return result
    wait = new_wait(
        eng,
        wait_id=step_key,
        step=step,
        server_id=server_id,
        action=act,
        result=result,
        request=request_fields(task.request, task.name),
        deadline=eng.deadline_for(action, step_opts.get("deadline")),
        phase="state" if act["status"] == "success" else "action",
        target=target_state,
        force=bool(step_opts.get("force", True)),
        grace=step_opts.get("grace"),
    )
    eng.waits.park(wait)
    # The monitor now owns the rest of the chain: no result yet, no next step from Celery.
    raise Ignore()


def _skipped(
    action: ServerAction,
    server_id: int,
    step: str,
    run_id: str | None,
    previous: dict[str, Any] | None,
    status: str,
) -> dict[str, Any]:
    history = [*(previous or {}).get("history", []), _summary(previous)] if previous else []
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


def _park_blocked(
    task: Task, eng: Engine, exc: Blocked, action: ServerAction, server_id: int, step: str, step_key: str
) -> dict[str, Any]:
    tries = eng.ledger.bump_locked(step_key)
    if tries > eng.max_locked_tries:
        raise APIError("locked", f"server {server_id} stayed locked through {tries - 1} waits", 423)
    if exc.action_id is None:
        # The blocking action ended between our POST and our look: just try again shortly.
        raise task.retry(countdown=1.0, max_retries=eng.max_locked_tries, exc=exc)
    wait = new_wait(
        eng,
        wait_id=step_key,
        step=step,
        server_id=server_id,
        action={"id": exc.action_id, "command": None, "progress": 0},
        result={},
        request=request_fields(task.request, task.name),
        deadline=eng.deadline_for(action, None),
        phase="blocked",
    )
    eng.waits.park(wait)
    raise Ignore()


class ActionTask(Task):
    """Base of the action tasks: a step that ends inside its task updates its run record here."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if isinstance(retval, dict) and retval.get("run_id"):
            hooks().step_succeeded(retval["run_id"], task_id, retval, last=not self.request.chain)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        run_id = (kwargs or {}).get("run_id")
        if isinstance(exc, redis.RedisError | OSError):
            # Redis went away mid-step: the message was never acknowledged, so it comes back and the step
            # re-attaches. The run has not failed.
            return
        if run_id:
            hooks().step_failed(run_id, task_id, exc)


def _make_task(action: ServerAction) -> Task:
    def run(self: Task, target: Any = None, **options: Any) -> dict[str, Any]:
        return run_action(self, action, target, options)

    run.__name__ = action.name
    run.__doc__ = action.summary
    expected = (BadInput, ActionFailed, RunCancelled)
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

"""Turn a workflow declaration and its submit-time facts into a plan and a Celery chain (pure: no broker)."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, chain, signature

from workers.errors import BadInput
from workers.server_actions import ACTIONS, TASK_NAMES

from .definitions import Workflow
from .retention import PRUNE_DEADLINE, PRUNE_TASK

# Steps that are tasks of ours rather than server actions: their task name and deadline.
LOCAL_STEPS: dict[str, tuple[str, float]] = {"prune_snapshots": (PRUNE_TASK, PRUNE_DEADLINE)}

__all__ = ["build_chain", "plan_fits", "plan_steps"]

# How long a run may hold its server beyond the sum of its steps' deadlines.
LOCK_MARGIN = 600.0


def plan_steps(
    workflow: Workflow,
    facts: dict[str, Any],
    run_id: str,
    *,
    priority: str | None = None,
    project: str | None = None,
) -> list[dict[str, Any]]:
    """Return the steps that will run, each with its fixed task id and its task's keyword arguments.

    Every step names the run's project: the steps' tasks pick that project's token and budget, whatever
    the workers' default project is by then.
    """
    steps: list[dict[str, Any]] = []
    for step in workflow.steps:
        if not step.when(facts):
            continue
        kwargs = {k: v for k, v in step.args(facts).items() if v is not None}
        kwargs.update(run_id=run_id, step=step.name)
        if priority:
            kwargs["priority"] = priority
        if project:
            kwargs["project"] = project
        steps.append(
            {
                "index": len(steps),
                "name": step.name,
                "action": step.action,
                "task": TASK_NAMES[step.action] if step.action in TASK_NAMES else LOCAL_STEPS[step.action][0],
                "task_id": f"{run_id}-{len(steps)}-{uuid.uuid4().hex[:8]}",
                "kwargs": kwargs,
                "restore": step.restore,
            }
        )
    return steps


def plan_fits(workflow: Workflow, run: dict[str, Any], status: str) -> str | None:
    """Say why the steps a queued run planned would not be planned for its server's ``status`` now (the
    steps' conditions read the server's status and the run's parameters), or None when they would."""
    planned = [s["name"] for s in run["steps"]]
    facts = {"server": {"status": status, "name": run.get("server_name")}, "params": run.get("params") or {}}
    before = run.get("server_status_before")
    # Set where the steps were planned for where the run ahead leaves the server, not for its status then.
    seen = run.get("status_when_queued")
    planned_for = (
        f"planned for the server {before}, as the run ahead of it leaves it (it was {seen} when queued)"
        if seen
        else f"planned for the server {before}, as it was when this run was queued"
    )
    if workflow.needs_running and status != "running":
        # Its one step reads no status, so the step names alone always fitted: a reset-password queued for
        # the running server a snapshot leaves was posted to an off one when the snapshot failed (a reviewer).
        return f"{workflow.name} needs a running server; it is {status} now and this run was {planned_for}"
    try:
        now = [step.name for step in workflow.steps if step.when(facts)]
    except (KeyError, TypeError):  # a condition that reads more than these: the plan stands
        return None
    except BadInput as exc:  # in no status a plan can be made for (starting, stopping...)
        return f"{exc.message} (this run was {planned_for}); nothing was done"
    if now == planned:
        return None
    return (
        f"the server is {status} now and this run was {planned_for}: it would now run {' → '.join(now)}, "
        f"not {' → '.join(planned)} as planned; nothing was done, submit it again"
    )


def build_chain(app: Celery, steps: list[dict[str, Any]], server_id: int) -> Any:
    """Return the Celery chain of the planned steps; the first gets the server id, the rest the result."""
    sigs = [
        signature(
            s["task"],
            args=(server_id,) if s["index"] == 0 else (),
            kwargs=s["kwargs"],
            app=app,
            task_id=s["task_id"],
        )
        for s in steps
    ]
    return chain(*sigs, app=app) if len(sigs) > 1 else sigs[0]


def lock_ttl(steps: list[dict[str, Any]]) -> float:
    """Return how long a run may hold its server: every step's deadline, plus a margin."""
    return sum(_deadline(s["action"]) + 60 for s in steps) + LOCK_MARGIN


def _deadline(action: str) -> float:
    return ACTIONS[action].deadline if action in ACTIONS else LOCAL_STEPS[action][1]

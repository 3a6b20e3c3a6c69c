"""Continue, fail or re-send a parked step's Celery chain from the monitor, as Celery itself would.

The task that parked a wait raised ``Ignore``, so Celery stored no result and sent no next step. When the
wait ends, this module does both on the task's behalf: the step's own result id becomes SUCCESS (or
FAILURE, which Celery's backend also writes into every remaining step of the chain, so a caller waiting on
the chain's final result sees the failure), and the next signature goes out with the remaining chain.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signature
from celery.app.task import Context

from .errors import HcloudFlowError
from .runs import RunHooks

__all__ = ["CeleryDispatcher", "request_fields"]

_FIELDS = (
    "id",
    "task",
    "args",
    "kwargs",
    "chain",
    "callbacks",
    "errbacks",
    "root_id",
    "parent_id",
    "group",
    "group_index",
    "chord",
    "reply_to",
    "correlation_id",
)


def request_fields(request: Any, name: str) -> dict[str, Any]:
    """Return the JSON fields of a task request that continuing its chain needs."""
    out = {f: getattr(request, f, None) for f in _FIELDS}
    out["task"] = name
    out["args"] = list(out["args"] or [])
    out["kwargs"] = dict(out["kwargs"] or {})
    out["chain"] = list(out["chain"] or [])
    return out


class CeleryDispatcher:
    """The monitor's Dispatcher over a Celery app."""

    def __init__(self, app: Celery, hooks: RunHooks | None = None) -> None:
        self.app = app
        self.hooks = hooks

    def _context(self, wait: dict[str, Any]) -> Context:
        fields = dict(wait["request"])
        return Context(fields, ignore_result=False, delivery_info={})

    def succeed(self, wait: dict[str, Any], result: dict[str, Any]) -> None:
        """Store the step's result and send the next step of its chain (and any linked callbacks)."""
        req = self._context(wait)
        self.app.backend.mark_as_done(req.id, result, request=req)
        root_id = req.root_id or req.id
        for callback in req.callbacks or []:
            signature(callback, app=self.app).apply_async((result,), parent_id=req.id, root_id=root_id)
        chain = list(req.chain or [])
        if chain:
            nxt = signature(chain[-1], app=self.app)
            nxt.apply_async((result,), chain=chain[:-1], parent_id=req.id, root_id=root_id)
        if self.hooks is not None and result.get("run_id"):
            self.hooks.step_succeeded(result["run_id"], req.id, result, last=not chain)

    def fail(self, wait: dict[str, Any], exc: HcloudFlowError) -> None:
        """Store the failure on the step and on every step after it, and call the chain's errbacks."""
        req = self._context(wait)
        self.app.backend.mark_as_failure(req.id, exc, request=req)
        run_id = (wait.get("result") or {}).get("run_id") or (req.kwargs or {}).get("run_id")
        if self.hooks is not None and run_id:
            self.hooks.step_failed(run_id, req.id, exc)

    def resend(self, wait: dict[str, Any]) -> None:
        """Send the step again under the same task id (after the action that blocked it ended)."""
        req = wait["request"]
        self.app.send_task(
            req["task"],
            args=req["args"],
            kwargs=req["kwargs"],
            task_id=req["id"],
            chain=req["chain"] or None,
            link=req.get("callbacks"),
            link_error=req.get("errbacks"),
            root_id=req.get("root_id"),
            parent_id=req.get("parent_id"),
        )

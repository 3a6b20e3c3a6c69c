"""Finish a parked step from the monitor as Celery's worker would have finished it.

A step that parks a wait raises ``Ignore``: Celery stores no result and sends nothing after it. When the wait
ends, the monitor calls this module, which does what Celery does after a task body (checked on Celery 5.7.0,
and pinned by ``tests/unit/test_continuation.py``):

- success, as ``build_tracer`` in ``celery/app/trace.py``: send the request's ``link`` callbacks, then the
  next signature of its ``chain`` with the result prepended and the rest of the chain, both with
  ``parent_id`` = the step, ``root_id`` = the chain's root and, only under ``task_inherit_parent_priority``,
  the step's message priority; then store SUCCESS. A group or a chord after the step is sent by its own
  ``apply_async``, as the tracer sends it.
- failure, as the tracer's ``handle_failure``: ``backend.mark_as_failure``, which stores FAILURE on the step
  and on every later step of its chain (so whoever waits on the chain's result sees it), counts the step's
  part of a chord, and calls its ``link_error`` callbacks.
- resend, as ``Task.retry``: ``signature_from_request`` sends the same message again (same id, chain,
  callbacks, priority, queue), but as the same try: no retry is counted and no delay is added.

Success and failure run with the step as the thread's current worker task, as in the tracer, so Celery's own
code sees what it sees there: what is sent is recorded as the step's children, and a chord body that the step
completes names the step as its parent. The request is kept whole, as the worker built it, so a field added by
a later Celery travels with it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, group, maybe_signature
from celery._state import pop_current_task, push_current_task
from celery.app.task import Context, Task

from .errors import BadInput, HcloudFlowError
from .runs import RunHooks

__all__ = ["CeleryDispatcher", "check_continuable", "request_fields"]


def request_fields(request: Any, name: str) -> dict[str, Any]:
    """Return a task's request as JSON: every field Celery set on it, the task named by its registered name.

    Nothing is picked by hand: the message priority (``delivery_info``, ``properties``), time limits, custom
    headers and stamps come along with the chain and callbacks, as Celery itself reads them back.
    """
    fields = {key: value for key, value in vars(request).items() if not key.startswith("_")}
    fields["task"] = name
    # The wait keeps this in Redis as JSON: return what will come back (tuples as lists), and fail here,
    # not in the monitor, on anything JSON cannot hold.
    return json.loads(json.dumps(fields))


def check_continuable(request: Any) -> None:
    """Raise BadInput unless the monitor can finish this step later; called before the step posts its action.

    Groups and chords after the step need no refusal: they go out through their own ``apply_async`` as
    Celery's tracer sends them (the contract test runs both for each shape).
    """
    if request.called_directly or request.is_eager:
        # No message, no worker: the wait would end long after the caller received an empty result, with
        # nothing to send the rest of the chain to.
        raise BadInput(
            "an action step runs in a worker and finishes after its action ends: send it with delay() or "
            "apply_async(), not by calling it, apply() or task_always_eager"
        )
    try:
        request_fields(request, request.task or "")
    except (TypeError, ValueError) as exc:
        raise BadInput(
            f"this step's arguments, chain or callbacks are not JSON ({exc}), so the step cannot wait for "
            "its action; send them with the json serializer"
        ) from exc


def _context(request: dict[str, Any]) -> Context:
    ctx = Context(request)
    # A Context defaults to a direct call, and Celery never takes a direct call for the worker's current task.
    ctx.called_directly = False
    # Celery's backend reads delivery_info as a dict (errbacks ask it for "is_eager").
    ctx.delivery_info = dict(ctx.delivery_info or {})
    return ctx


@contextmanager
def _running(task: Task, req: Context) -> Iterator[None]:
    """Make ``req`` the thread's current worker task, as the tracer does around a task and its aftermath."""
    # celery._state is where the tracer's own stack lives; these two are its documented push and pop. The
    # stacks are per thread, so the monitor's thread never shows up in a worker thread's tasks.
    push_current_task(task)
    task.request_stack.push(req)
    try:
        yield
    finally:
        task.request_stack.pop()
        pop_current_task()


def _ignores_result(task: Task, request: dict[str, Any]) -> bool:
    # The message's own flag wins over the task's default, as in the worker.
    flag = request.get("ignore_result")
    return bool(task.ignore_result if flag is None else flag)


class CeleryDispatcher:
    """The monitor's Dispatcher over a Celery app: continue, fail or resend a parked step's request."""

    def __init__(self, app: Celery, hooks: RunHooks | None = None) -> None:
        self.app = app
        self.hooks = hooks

    def _task(self, request: dict[str, Any]) -> Task:
        return self.app.tasks[request["task"]]

    def succeed(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        """Send the step's callbacks and the next step of its chain with ``result``, then store SUCCESS."""
        task, req = self._task(request), _context(request)
        chain = list(req.chain or [])
        priority = req.delivery_info.get("priority") if self.app.conf.task_inherit_parent_priority else None
        options = {"parent_id": req.id, "root_id": req.root_id or req.id, "priority": priority}
        with _running(task, req):
            # Sent before the result is stored, so that the result names them as its children.
            self._send_callbacks(req.callbacks or [], result, options)
            if chain:
                nxt = maybe_signature(chain[-1], app=self.app)
                nxt.apply_async((result,), chain=chain[:-1], **options)
            task.backend.mark_as_done(req.id, result, req, not _ignores_result(task, request))
        if self.hooks is not None and result.get("run_id"):
            self.hooks.step_succeeded(result["run_id"], req.id, result, last=not chain)

    def _send_callbacks(self, callbacks: list[Any], result: dict[str, Any], options: dict[str, Any]) -> None:
        sigs = [maybe_signature(cb, app=self.app) for cb in callbacks]
        if len(sigs) == 1:
            sigs[0].apply_async((result,), **options)
            return
        # Several callbacks: each group on its own, the rest together as one group, as the tracer sends them.
        for sig in sigs:
            if isinstance(sig, group):
                sig.apply_async((result,), **options)
        plain = [sig for sig in sigs if not isinstance(sig, group)]
        if plain:
            group(plain, app=self.app).apply_async((result,), **options)

    def fail(self, request: dict[str, Any], exc: HcloudFlowError, run_id: str | None) -> None:
        """Store FAILURE on the step, its chain's later steps and its chord part; call its errbacks."""
        task, req = self._task(request), _context(request)
        # The exception was never raised, so it has no stack: its own line is the traceback people get.
        trace = "".join(traceback.format_exception_only(exc))
        store = task.store_errors_even_if_ignored if _ignores_result(task, request) else True
        with _running(task, req):
            task.backend.mark_as_failure(
                req.id, exc, trace, request=req, store_result=store, call_errbacks=True
            )
        run_id = run_id or (req.kwargs or {}).get("run_id")
        if self.hooks is not None and run_id:
            self.hooks.step_failed(run_id, req.id, exc)

    def resend(self, request: dict[str, Any]) -> None:
        """Send the step again under its own task id, with its chain, callbacks, priority and queue."""
        task = self._task(request)
        # Sent from outside the step (Task.retry sends from inside it), so a first step keeps no parent.
        task.signature_from_request(_context(request)).apply_async()

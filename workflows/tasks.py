"""Public task names for other services: submit, cancel and read runs with ``send_task`` (any language).

``hcloud_flow.submit`` takes ``workflow``, ``server`` (id or name), ``params`` (an object) and ``queue``
(bool), all JSON, and returns ``{"run_id", "state", "steps"}`` or fails with BadInput / ServerBusy.
"""

from __future__ import annotations

from typing import Any

from workers.app import app, engine, hooks, run_store
from workers.errors import BadInput, ServerBusy

from .submit import cancel_run, submit_run

__all__ = ["cancel", "status", "submit"]


@app.task(name="hcloud_flow.submit", throws=(BadInput, ServerBusy), acks_late=False)
def submit(
    workflow: Any = None, server: Any = None, params: Any = None, queue: Any = False
) -> dict[str, Any]:
    """Validate and start a workflow run; return its id."""
    # acks_late is off here: a redelivered submit would start a second run of the same request.
    return submit_run(
        app,
        engine().client,
        run_store(),
        hooks(),
        workflow=workflow,
        server=server,
        params=params if params is not None else {},
        queue=queue,
    )


@app.task(name="hcloud_flow.cancel", throws=(BadInput,))
def cancel(run_id: Any = None) -> dict[str, Any]:
    """Cancel a run before its next step."""
    if not isinstance(run_id, str):
        raise BadInput("run_id must be a string", "run_id")
    return cancel_run(run_store(), run_id)


@app.task(name="hcloud_flow.status", throws=(BadInput,))
def status(run_id: Any = None) -> dict[str, Any]:
    """Return a run record."""
    run = run_store().get(run_id) if isinstance(run_id, str) else None
    if run is None:
        raise BadInput(f"no run {run_id!r}", "run_id")
    run.pop("chain", None)
    return run

"""Public task names for other services: submit, cancel and read runs with ``send_task`` (any language).

``hcloud_flow.submit`` takes ``workflow``, ``server`` (id or name), ``params`` (an object) and ``queue``
(bool), all JSON, and returns ``{"run_id", "state", "steps"}`` or fails with BadInput / ServerBusy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from workers.app import app, engine, hooks, run_store
from workers.deferred import Deferred
from workers.errors import BadInput, ServerBusy
from workers.runs import RUN_LISTENERS, RUN_STARTED

from .fleet import FleetRunner, JobStore
from .inventory import project_images, project_servers
from .notify import ATTEMPTS, Notifier, deliver
from .submit import cancel_run, submit_run

__all__ = [
    "cancel",
    "fleet_advance",
    "fleet_control",
    "fleet_plan",
    "fleet_retry",
    "fleet_start",
    "notify",
    "status",
    "submit",
    "window_fire",
]


def fleet_runner() -> FleetRunner:
    """Return the fleet runner of this worker process."""
    store = run_store()
    job_store = JobStore(store.redis, retention=store.retention)
    submit_one = partial(submit_run, app, engine().client, store, hooks())
    return FleetRunner(
        job_store,
        engine().client,
        submit_one,
        partial(cancel_run, store),
        kick=_kick,
        run_store=store,
        restart=hooks().start,
        fresh_for=float(app.conf.hcloud_flow.get("fleet_fresh", 10.0)),
        recheck=float(app.conf.hcloud_flow.get("block_recheck", 15.0)),
        on_event=lambda event, subject: notifier().emit(event, subject, subject.get("notify")),
    )


def notifier() -> Notifier:
    """Return this worker's notifier: each event to the global URLs and to those its subject names."""
    return Notifier(
        lambda delivery: notify.apply_async(kwargs=delivery), app.conf.hcloud_flow.get("notify_urls") or []
    )


@app.task(name="hcloud_flow.notify", bind=True, acks_late=False, max_retries=ATTEMPTS - 1)
def notify(self: Any, url: Any = None, body: Any = None) -> dict[str, Any]:
    """Deliver one event to one URL; try again later (at most ATTEMPTS in all) while it is not taken."""
    import celeryconfig

    return deliver(self, str(url), dict(body or {}), celeryconfig.webhook_secret(), run_store())


def _kick(job_id: str, countdown: float) -> None:
    # Kept in Redis and sent by the next monitor round that finds it due, not held as a countdown in this
    # worker's memory, where a crash would stall the job until the visibility timeout.
    store = run_store()
    Deferred(store.redis).later(fleet_advance.name, {"job_id": job_id}, store.clock() + countdown)


def _on_run_ended(run: dict[str, Any]) -> None:
    if run.get("job_id"):
        fleet_runner().on_run_ended(run)
    else:  # a job's runs are told of through the job's own events
        notifier().emit("run.ended", run, run.get("notify"))


def _on_run_started(run: dict[str, Any]) -> None:
    if not run.get("job_id"):
        notifier().emit("run.started", run, run.get("notify"))


RUN_LISTENERS.append(_on_run_ended)
RUN_STARTED.append(_on_run_started)


@app.task(name="hcloud_flow.submit", throws=(BadInput, ServerBusy), acks_late=False)
def submit(
    workflow: Any = None,
    server: Any = None,
    params: Any = None,
    queue: Any = False,
    submitted_by: Any = None,
    notify: Any = None,
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
        submitted_by=submitted_by,
        notify=notify,
    )


@app.task(name="hcloud_flow.cancel", throws=(BadInput,))
def cancel(run_id: Any = None, by: Any = None) -> dict[str, Any]:
    """Cancel a run before its next step; ``by`` (who asked) is recorded with it."""
    if not isinstance(run_id, str):
        raise BadInput("run_id must be a string", "run_id")
    return cancel_run(run_store(), run_id, by)


@app.task(name="hcloud_flow.status", throws=(BadInput,))
def status(run_id: Any = None) -> dict[str, Any]:
    """Return a run record."""
    run = run_store().get(run_id) if isinstance(run_id, str) else None
    if run is None:
        raise BadInput(f"no run {run_id!r}", "run_id")
    run.pop("chain", None)
    return run


@app.task(name="hcloud_flow.servers", throws=(BadInput,))
def servers(selector: Any = None) -> dict[str, Any]:
    """Return the project's servers (or those the label selector picks), each with the run holding it."""
    return {"servers": project_servers(engine().client, run_store(), selector)}


@app.task(name="hcloud_flow.images", throws=(BadInput,))
def images() -> dict[str, Any]:
    """Return the project's snapshots and backups, each with the run of ours that made it."""
    return {"images": project_images(engine().client, run_store())}


def _fleet_options(options: dict[str, Any]) -> dict[str, Any]:
    """A caller in another language may send anything: the fleet's model (``FleetSpec``) refuses it."""
    options.pop("submitted_by", None)  # the request's, not the fleet's: recorded by fleet_start
    return {"workflow": None, **options}


@app.task(name="hcloud_flow.fleet_start", throws=(BadInput,), acks_late=False)
def fleet_start(submitted_by: Any = None, **options: Any) -> dict[str, Any]:
    """Validate and start a fleet job; return its record. Options: ``workflows.specs.FleetSpec``'s fields;
    ``submitted_by`` (who asks) is recorded with the job and its runs."""
    return fleet_runner().start(submitted_by=submitted_by, **_fleet_options(options))


@app.task(name="hcloud_flow.fleet_plan", throws=(BadInput,))
def fleet_plan(**options: Any) -> dict[str, Any]:
    """Return what a fleet job would do and spend, changing nothing (the dry run)."""
    from .dry_run import describe

    return describe(fleet_runner().plan(**_fleet_options(options)), engine())


@app.task(name="hcloud_flow.fleet_control", throws=(BadInput,))
def fleet_control(job_id: Any = None, verb: Any = None, by: Any = None) -> dict[str, Any]:
    """Pause, resume, cancel, approve or reject a fleet job (``fleet_plan.JOB_CONTROLS``); ``by`` (who
    asked) is recorded with the job."""
    return fleet_runner().control(job_id, verb, by)


@app.task(name="hcloud_flow.fleet_retry", throws=(BadInput,), acks_late=False)
def fleet_retry(
    job_id: Any = None, failed: Any = True, not_started: Any = False, by: Any = None
) -> dict[str, Any]:
    """Start a new job over an ended job's failed and/or not started servers; return the new job."""
    return fleet_runner().retry(job_id, failed=failed, not_started=not_started, by=by)


@app.task(name="hcloud_flow.window_fire", acks_late=False)
def window_fire(name: Any = None) -> dict[str, Any]:
    """Fired by redbeat: start the window's fleet job if this is one of its local minutes."""
    from .windows import WindowStore, fire

    runner = fleet_runner()
    return fire(WindowStore(runner.store.redis, app), runner, str(name), runner.store.clock())


@app.task(name="hcloud_flow.fleet_advance", acks_late=False)
def fleet_advance(job_id: Any = None) -> None:
    """Start what a fleet job may start now (sent again later when the rate budget held it back)."""
    if isinstance(job_id, str):
        fleet_runner().advance(job_id)

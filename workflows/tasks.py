"""Public task names for other services: submit, cancel and read runs with ``send_task`` (any language).

``hcloud_flow.submit`` takes ``workflow``, ``server`` (id or name), ``params`` (an object) and ``queue``
(bool), all JSON, and returns ``{"run_id", "state", "steps"}`` or fails with BadInput / ServerBusy.
"""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from celery.exceptions import Ignore
from celery.signals import worker_init

from workers.app import app, engine, hooks, run_store
from workers.deferred import Deferred
from workers.errors import BadInput, ConfigError, NotFound, RunCancelled, ServerBusy
from workers.ids import is_id
from workers.labels import STEP_LABEL
from workers.run_store import FINAL
from workers.runs import PLAN_CHECKS, RUN_LISTENERS, RUN_STARTED
from workers.server_actions import check_step_options
from workers.tasks import ActionTask, history_after, resolve_target, step_engine, took_over
from workers.user_data import without_user_data

from .build import plan_fits
from .definitions import WORKFLOWS
from .fleet import FleetRunner, JobStore, resolve_targets
from .inventory import project_images, project_servers
from .notify import ATTEMPTS, Notifier, check_urls, deliver
from .retention import PRUNE_TASK, check_policy, prune
from .specs import Targets, checked
from .submission import cancel_run, from_run_project, submit_run

__all__ = [
    "cancel",
    "fleet_advance",
    "fleet_control",
    "fleet_plan",
    "fleet_retry",
    "fleet_start",
    "images_prune",
    "job_runner",
    "notify",
    "prune_snapshots",
    "status",
    "submit",
    "window_fire",
]


def fleet_runner(project: str | None = None) -> FleetRunner:
    """Return this worker's fleet runner of ``project`` (the default project for None): its client holds
    that project's token and budget, and the runs it submits act there."""
    eng = engine(project)
    store = run_store()
    job_store = JobStore(store.redis, retention=store.retention)
    submit_one = partial(submit_run, app, eng.client, store, hooks(), project=eng.project)
    return FleetRunner(
        job_store,
        eng.client,
        submit_one,
        partial(cancel_run, store),
        kick=_kick,
        watch=_watch,
        run_store=store,
        restart=hooks().start,
        fresh_for=float(app.conf.hcloud_flow.get("fleet_fresh", 10.0)),
        recheck=float(app.conf.hcloud_flow.get("block_recheck", 15.0)),
        on_event=lambda event, subject: notifier().emit(event, subject, subject.get("notify")),
        project=eng.project,
    )


def job_runner(job_id: Any) -> FleetRunner:
    """Return the fleet runner of the project a recorded job acts in (the default for an unknown job: its
    own methods then refuse the id)."""
    job = JobStore(run_store().redis).get(job_id) if isinstance(job_id, str) else None
    return fleet_runner((job or {}).get("project"))


def notifier() -> Notifier:
    """Return this worker's notifier: each event to the global URLs and to those its subject names."""
    return Notifier(
        lambda delivery: notify.apply_async(kwargs=delivery), app.conf.hcloud_flow.get("notify_urls") or []
    )


def _strict(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse arguments a task does not take as BadInput naming those it does: sent from another language
    (send_task), a misspelt keyword failed with Python's own TypeError, and a positional argument to
    fleet_start was taken as its submitter (an outside test)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            extra = sorted(set(kwargs) - set(sig.parameters))
            given = ", ".join(extra) if extra else f"{len(args)} positional argument(s)"
            names = [p.name for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
            takes = ", ".join(names) + (" and the job's fields" if len(names) < len(sig.parameters) else "")
            raise BadInput(
                f"{fn.__name__} does not take {given}; it takes keyword arguments: {takes}"
            ) from None
        return fn(*args, **kwargs)

    return run


@app.task(name="hcloud_flow.notify", bind=True, acks_late=False, max_retries=ATTEMPTS - 1)
def notify(self: Any, url: Any = None, body: Any = None) -> dict[str, Any]:
    """Deliver one event to one URL; try again later (at most ATTEMPTS in all) while it is not taken."""
    import celeryconfig

    try:
        secret = celeryconfig.webhook_secret()  # read at each delivery: a rotated key is used at once
    except SystemExit as exc:
        # Raised in a pool thread, SystemExit left the task "active" for good, its webhook never sent.
        raise ConfigError(f"webhook not sent: {exc}") from None
    return deliver(self, str(url), dict(body or {}), secret, run_store())


@worker_init.connect
def _refuse_to_start_without_webhooks(**_: object) -> None:
    """Stop a worker whose webhooks could never go out (its signing key unreadable, a global URL refused),
    before it says "ready": it had started, and every webhook was lost without a word (an outside test)."""
    import celeryconfig

    celeryconfig.webhook_secret()  # SystemExit, naming the variable, as for the token and the sealing key
    try:
        check_urls(app.conf.hcloud_flow.get("notify_urls") or [], "HCLOUD_FLOW_NOTIFY_URLS")
    except BadInput as exc:
        raise SystemExit(f"hcloud-flow worker cannot start: {exc.message}") from None


def _kick(job_id: str, countdown: float, **marks: Any) -> None:
    # Kept in Redis and sent by the next monitor round that finds it due, not held as a countdown in this
    # worker's memory, where a crash would stall the job until the visibility timeout.
    store = run_store()
    now = store.clock()
    Deferred(store.redis).later(fleet_advance.name, {"job_id": job_id, **marks}, now + countdown, now)


def _watch(job_id: str, countdown: float) -> None:
    # In a deferred entry of its own (its kwargs differ from _kick's): see workflows.fleet.WATCH_AFTER.
    _kick(job_id, countdown, watch=True)


def _on_run_ended(run: dict[str, Any]) -> None:
    if run.get("job_id"):
        fleet_runner(run.get("project")).on_run_ended(run)
    else:  # a job's runs are told of through the job's own events
        notifier().emit("run.ended", run, run.get("notify"))


def _on_run_started(run: dict[str, Any]) -> None:
    if not run.get("job_id"):
        notifier().emit("run.started", run, run.get("notify"))


def _queued_plan_fits(run: dict[str, Any], status: str) -> str | None:
    wf = WORKFLOWS.get(run.get("workflow") or "")
    return None if wf is None else plan_fits(wf, run, status)


RUN_LISTENERS.append(_on_run_ended)
RUN_STARTED.append(_on_run_started)
PLAN_CHECKS.append(_queued_plan_fits)


@app.task(name="hcloud_flow.submit", throws=(BadInput, ServerBusy), acks_late=False)
def submit(
    workflow: Any = None,
    server: Any = None,
    params: Any = None,
    queue: Any = False,
    submitted_by: Any = None,
    notify: Any = None,
    project: Any = None,
    *extra: Any,
    **unknown: Any,
) -> dict[str, Any]:
    """Validate and start a workflow run in ``project`` (the default project for None); return its id."""
    # A caller in another language may send anything: refused here, not by Python as a TypeError.
    if extra or unknown:
        what = ", ".join(sorted(unknown)) or f"{len(extra)} more positional arguments"
        raise BadInput(
            f"submit does not take {what} (it takes: workflow, server, params, queue, submitted_by, notify, "
            "project; workflow parameters go in params)"[:300],
            sorted(unknown)[0] if unknown else "submit",
        )
    # acks_late is off here: a redelivered submit would start a second run of the same request.
    if project is None:
        # An undo runs where the run it undoes ran.
        project = from_run_project(run_store(), workflow, params)
    eng = engine(project)
    return submit_run(
        app,
        eng.client,
        run_store(),
        hooks(),
        workflow=workflow,
        server=server,
        params=params if params is not None else {},
        queue=queue,
        submitted_by=submitted_by,
        notify=notify,
        project=eng.project,
    )


@app.task(name="hcloud_flow.cancel", throws=(BadInput,))
@_strict
def cancel(run_id: Any = None, by: Any = None) -> dict[str, Any]:
    """Cancel a run before its next step; ``by`` (who asked) is recorded with it."""
    if not isinstance(run_id, str):
        raise BadInput("run_id must be a string", "run_id")
    return cancel_run(run_store(), run_id, by)


@app.task(name="hcloud_flow.status", throws=(BadInput,))
@_strict
def status(run_id: Any = None) -> dict[str, Any]:
    """Return a run record."""
    if run_id is None:
        raise BadInput("run_id is missing: give the id submit answered with", "run_id")
    run = run_store().get(run_id) if isinstance(run_id, str) else None
    if run is None:
        raise NotFound.record("run", run_id, "run_id")
    run.pop("chain", None)
    return run


@app.task(name="hcloud_flow.servers", throws=(BadInput,))
@_strict
def servers(selector: Any = None, project: Any = None) -> dict[str, Any]:
    """Return the project's servers (or those the label selector picks), each with the run holding it."""
    eng = engine(project)
    return {"project": eng.project, "servers": project_servers(eng.client, run_store(), selector)}


@app.task(name="hcloud_flow.images", throws=(BadInput,))
@_strict
def images(project: Any = None) -> dict[str, Any]:
    """Return the project's snapshots and backups, each with the run of ours that made it."""
    eng = engine(project)
    return {"project": eng.project, "images": project_images(eng.client, run_store())}


def _fleet_options(options: dict[str, Any]) -> dict[str, Any]:
    """A caller in another language may send anything: the fleet's model (``FleetSpec``) refuses it."""
    options.pop("submitted_by", None)  # the request's, not the fleet's: recorded by fleet_start
    return {"workflow": None, **options}


@app.task(name="hcloud_flow.fleet_start", throws=(BadInput,), acks_late=False)
@_strict
def fleet_start(*, submitted_by: Any = None, **options: Any) -> dict[str, Any]:
    """Validate and start a fleet job; return its record. Options: ``workflows.specs.FleetSpec``'s fields;
    ``submitted_by`` (who asks) is recorded with the job and its runs."""
    job = fleet_runner(options.get("project")).start(submitted_by=submitted_by, **_fleet_options(options))
    return dict(without_user_data(job))  # the result (logged, in task events): user data as its fingerprint


@app.task(name="hcloud_flow.fleet_plan", throws=(BadInput,))
@_strict
def fleet_plan(**options: Any) -> dict[str, Any]:
    """Return what a fleet job would do and spend, changing nothing (the dry run)."""
    from .dry_run import describe

    runner = fleet_runner(options.get("project"))
    return dict(without_user_data(describe(runner.plan(**_fleet_options(options)), engine(runner.project))))


@app.task(name="hcloud_flow.fleet_control", throws=(BadInput,))
@_strict
def fleet_control(job_id: Any = None, verb: Any = None, by: Any = None) -> dict[str, Any]:
    """Pause, resume, cancel, approve or reject a fleet job (``fleet_plan.JOB_CONTROLS``); ``by`` (who
    asked) is recorded with the job."""
    return job_runner(job_id).control(job_id, verb, by)


@app.task(name="hcloud_flow.fleet_retry", throws=(BadInput,), acks_late=False)
@_strict
def fleet_retry(
    job_id: Any = None, failed: Any = True, not_started: Any = False, by: Any = None, user_data: Any = None
) -> dict[str, Any]:
    """Start a new job over an ended job's failed and/or not started servers; return the new job.
    ``user_data``: the job's own, given again once the job keeps only its fingerprint."""
    job = job_runner(job_id).retry(job_id, failed=failed, not_started=not_started, by=by, user_data=user_data)
    return dict(without_user_data(job))


def _made_image(previous: dict[str, Any] | None) -> int | None:
    """Return the image the run's create_image step made, from the previous step's result and history."""
    if not previous:
        return None
    for result in [previous, *reversed(previous.get("history") or [])]:
        image = (result.get("outputs") or {}).get("image") or {}
        if result.get("action") == "create_image" and image.get("id"):
            return int(image["id"])
    return None


@app.task(name=PRUNE_TASK, bind=True, base=ActionTask, throws=(BadInput, RunCancelled))
def prune_snapshots(self: Any, target: Any = None, **options: Any) -> dict[str, Any]:
    """A snapshot run's last step: delete older snapshots hcloud-flow made of its server beyond the policy
    (``keep``, ``keep_within``; workflows/retention.py).

    Delivered more than once (a worker died mid-step), it prunes once: the step ledger keeps each deletion
    as it happens and the outcome once it is known; a later delivery adds to the deletions, or returns the
    recorded outcome. A delivery after its run ended does nothing: the server may be another run's by then.
    """
    policy = check_policy(options.pop("keep", None), options.pop("keep_within", None), required=True)
    opts = check_step_options(options)
    eng = step_engine(opts.get("project"), target)
    step_key = self.request.id
    took_over(eng, self.request.parent_id)  # the previous step's hand-off watch: its next step started
    server_id, previous = resolve_target(eng, target)
    run_id = opts.get("run_id") or (previous or {}).get("run_id")
    record = eng.ledger.get(step_key)
    result = {
        "server_id": server_id,
        "step": opts.get("step") or "prune",
        "action": "prune_snapshots",
        "action_id": None,
        "command": None,
        "status": "success",
        "attached": False,
        "run_id": run_id,
        "project": eng.project,
        "history": history_after(previous),
    }
    if record.status == "returned" and "pruned" in (record.outputs or {}):
        return {**result, "outputs": record.outputs, "attached": True}
    if run_id:
        run = run_store().get(run_id, live=False)
        if run is not None and run["state"] in FINAL:
            raise Ignore()
        if not hooks().step_started(run_id, step_key):  # raises RunCancelled when the run was cancelled
            result["run_id"] = None  # not a step of that run: its record is not ours to write
    claim = eng.ledger.claim(step_key, 120.0)
    if claim is None:
        raise Ignore()  # another delivery is pruning right now; it ends the step
    try:
        earlier = list((record.outputs or {}).get("deleting") or [])

        def note(row: dict[str, Any]) -> None:
            earlier.append(row)
            eng.ledger.update(step_key, outputs=json.dumps({"deleting": earlier}))

        before = len(earlier)
        with eng.client.priority_scope(opts.get("priority"), patience=60.0):
            outcome = prune(
                eng.client,
                server_id,
                policy,
                eng.clock(),
                just_made=_made_image(previous),
                on_deleted=note,
                needed=_needed_by_queued_runs(server_id),
            )
        # What earlier deliveries deleted counts too: those images are gone from this delivery's listing.
        outcome["deleted"] = earlier[:before] + outcome.get("deleted", [])
        outputs = {"pruned": outcome}
        eng.ledger.update(step_key, status="returned", outputs=json.dumps(outputs))
    finally:
        eng.ledger.release(step_key, claim)
    return {**result, "outputs": outputs}


# How long `images prune` may hold one server: its deletions, with their retries.
_PRUNE_HOLD = 300.0


@app.task(name="hcloud_flow.images_prune", throws=(BadInput,), acks_late=False)
@_strict
def images_prune(
    selector: Any = None,
    servers: Any = None,
    keep: Any = None,
    keep_within: Any = None,
    dry_run: Any = False,
    project: Any = None,
) -> dict[str, Any]:
    """Apply a retention policy to the snapshots hcloud-flow made of the servers a selector (or a list)
    picks; ``dry_run`` lists what would go and deletes nothing."""
    policy = check_policy(keep, keep_within, required=True)
    if not isinstance(dry_run, bool):
        raise BadInput("dry_run must be true or false", "dry_run")
    spec = checked(Targets, {"selector": selector, "servers": servers, "project": project})
    eng = engine(spec.project)
    targets = resolve_targets(eng.client, spec.selector, spec.servers)
    # One listing of the project's snapshots that we made serves every server.
    made = eng.client.list_images(type="snapshot", label_selector=STEP_LABEL)
    return {
        "project": eng.project,
        "dry_run": dry_run,
        "servers": [_prune_one(eng, s, policy, made, dry_run) for s in targets],
    }


def _needed_by_queued_runs(server_id: int) -> frozenset[int]:
    """The images runs queued on the server will use: a restore queued behind a snapshot run lost its
    snapshot to that run's --keep (an outside test)."""
    store = run_store()
    needed = set()
    for run_id in store.queued(server_id):
        image = ((store.get(run_id, live=False) or {}).get("params") or {}).get("image")
        if is_id(image):
            needed.add(int(str(image)))
    return frozenset(needed)


def _prune_one(
    eng: Any, server: dict[str, Any], policy: Any, made: list[dict[str, Any]], dry_run: bool
) -> dict[str, Any]:
    """Prune one server's snapshots while holding the server as a run would: a run in flight may be about
    to use one of them (a restore's image) or make one; such a server is skipped and said to be."""
    sid, store = int(server["id"]), run_store()
    # A dry run says what the prune would do now, the skip of a held server included (it listed deletions
    # that the prune then skipped; an outside test).
    me = f"prune-{uuid.uuid4().hex[:12]}"
    holder = store.holder(sid) if dry_run else store.acquire(sid, me, _PRUNE_HOLD)
    if dry_run and holder is None:
        return {
            "name": server["name"],
            **prune(eng.client, sid, policy, eng.clock(), dry_run=True, images=made),
        }
    if holder is not None:
        return {
            "name": server["name"],
            "server_id": sid,
            "skipped": f"run {holder} holds the server; prune it once that run has ended",
            "dry_run": dry_run,
            ("would_delete" if dry_run else "deleted"): [],
            "failed": [],
            "kept": [],
        }
    try:
        return {"name": server["name"], **prune(eng.client, sid, policy, eng.clock(), images=made)}
    finally:
        store.release(sid, me)
        hooks().start_next(sid)  # a run queued behind the prune meanwhile


@app.task(name="hcloud_flow.window_fire", acks_late=False)
@_strict
def window_fire(name: Any = None) -> dict[str, Any]:
    """Fired by redbeat: start the window's fleet job if this is one of its local minutes."""
    from .windows import WindowStore, fire

    store = run_store()
    return fire(WindowStore(store.redis, app), fleet_runner, str(name), store.clock())


@app.task(name="hcloud_flow.fleet_advance", acks_late=False)
@_strict
def fleet_advance(job_id: Any = None, watch: Any = None) -> None:
    """Start what a fleet job may start now (sent again later when the rate budget held it back); ``watch``
    only marks the periodic look's own deferred entry (workflows.fleet.WATCH_AFTER)."""
    if isinstance(job_id, str):
        job_runner(job_id).advance(job_id)

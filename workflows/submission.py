"""Submitting, cancelling and reading runs: the plain functions under the submit task, the CLI and the API.

``submit_run`` runs inside a worker (the ``hcloud_flow.submit`` task), because checking a request against
the API needs the token, and the token lives in the workers' environment only.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers.client import HcloudClient
from workers.errors import BadInput, NotFound, ServerBusy, Unsettled
from workers.run_store import FINAL, RunStore
from workers.runs import RunHooks, error_info
from workers.server_actions import ACTIONS
from workers.user_data import fingerprint

from .build import build_chain, lock_ttl, plan_steps
from .definitions import HEADING, SETTLED, WORKFLOWS
from .notify import check_urls
from .undo import from_earlier_run, project_of_run
from .validate import (
    Lookups,
    check_params,
    check_submitter,
    find_server,
    gather_facts,
    require_unicode,
    workflow_named,
)

__all__ = ["cancel_run", "from_run_project", "submit_run"]


def _recordable(params: dict[str, Any]) -> dict[str, Any]:
    """Return parameters fit for the run record: user data is kept as a digest, never as text."""
    out = {k: v for k, v in params.items() if v is not None}
    if out.get("user_data"):
        out["user_data"] = fingerprint(out["user_data"])
    return out


def from_run_project(store: RunStore, workflow: Any, params: Any) -> str | None:
    """Return the project of the run an undo workflow restores from (None: it names none, or not an undo)."""
    wf = WORKFLOWS.get(workflow) if isinstance(workflow, str) else None
    if wf is None or wf.from_run is None or not isinstance(params, dict):
        return None
    return project_of_run(store, params.get(wf.from_run))


def submit_run(
    app: Celery,
    client: HcloudClient,
    store: RunStore,
    hooks: RunHooks,
    *,
    workflow: Any,
    server: Any = None,
    params: dict[str, Any] | None = None,
    queue: bool = False,
    job_id: str | None = None,
    priority: str | None = None,
    lookups: Lookups | None = None,
    submitted_by: Any = None,
    notify: Any = None,
    project: str | None = None,
) -> dict[str, Any]:
    """Validate a request, record the run, take the server (or queue behind its run) and start the chain.

    ``client`` is the API client of ``project`` (the run acts there; its record says so). ``lookups``
    carries what a fleet wave already read from the API (fresh server objects, the image).
    """
    wf = workflow_named(workflow)
    require_unicode({"server": server, "params": params}, "the submission")
    clean = check_params(wf, {} if params is None else params)  # [], 0 or "" is refused, not taken as none
    submitter = check_submitter(submitted_by)
    urls = check_urls(notify)
    if not isinstance(queue, bool):
        raise BadInput("queue must be true or false", "queue")
    if wf.from_run is not None:
        server, clean = from_earlier_run(store, client, wf.from_run, server, clean, project)
    elif server is None:
        raise BadInput("server is missing; give the server as an id or a name (--server)", "server")
    found: str | None = None  # the server's status now, where the plan is for another (the holder's leaving)
    if queue:
        server, lookups, found = _as_its_holder_leaves(client, store, server, lookups)
    facts = gather_facts(client, wf, server, clean, lookups)
    run_id = store.new_id()
    try:
        steps = plan_steps(wf, facts, run_id, priority=priority, project=project)
    except Unsettled as exc:
        facts, found = _behind_its_mover(store, facts, exc, queue), exc.status
        steps = plan_steps(wf, facts, run_id, priority=priority, project=project)
    srv = facts["server"]
    ttl = lock_ttl(steps)
    sig = build_chain(app, steps, int(srv["id"]))
    meta = {
        "id": run_id,
        "workflow": wf.name,
        "project": project,
        "server_id": int(srv["id"]),
        "server_name": srv["name"],
        "server_status_before": srv["status"],  # what the steps were planned for
        **({"status_when_queued": found} if found is not None else {}),
        "params": _recordable(facts["params"]),
        "steps": [{k: s[k] for k in ("index", "name", "action", "task_id", "restore")} for s in steps],
        "lock_ttl": ttl,
        "job_id": job_id,
        "submitted_by": submitter,
        "warnings": facts.get("warnings") or [],
        "notify": urls,
    }
    holder = store.acquire(int(srv["id"]), run_id, ttl)
    heading = found is not None
    if holder is None and heading:
        # Its mover ended just now: planned for where the server was heading, it starts as a queued run
        # does, once the plan is checked against the server's status.
        store.release(int(srv["id"]), run_id)
    if holder is not None or heading:
        if not queue and holder is not None:  # (a plan for where it was heading is only ever queued)
            raise ServerBusy(int(srv["id"]), holder)
        # Only a queued run keeps its chain in the record, to be sent when the server is free.
        store.create({**meta, "chain": dict(sig)}, "queued")
        store.enqueue(int(srv["id"]), run_id)
        # The holder may have finished between our try and our enqueue: start us if the server is free.
        if store.holder(int(srv["id"])) is None:
            hooks.start_next(int(srv["id"]))
        return {
            "run_id": run_id,
            "state": store.state(run_id),
            "queued_behind": holder,
            "steps": meta["steps"],
            "warnings": meta["warnings"],
        }
    # The record keeps the chain until the first step starts (RunHooks.step_started drops it), so that a
    # first message lost with a killed worker can be sent again (workflows.fleet sweeps for that).
    store.create({**meta, "chain": dict(sig)}, "queued")
    try:
        hooks.start({**meta, "chain": dict(sig)})
    except Exception as exc:  # the broker refused it: free the server, say why in the record
        store.set_state(run_id, "failed", finished=store.clock(), error=error_info(exc))
        store.release(int(srv["id"]), run_id)
        raise
    return {"run_id": run_id, "state": "queued", "steps": meta["steps"], "warnings": meta["warnings"]}


def _behind_its_mover(store: RunStore, facts: dict[str, Any], exc: Unsettled, queue: bool) -> dict[str, Any]:
    """Return the facts to plan a run on a server on its way between running and off, or refuse it.

    Mostly the run holding the server moves it: the request is then as busy as any (409, or ``skipped`` in a
    fleet job), or queued behind that run, planned for where the server is heading. Moved by another hand,
    it is refused: planned as off, a booting server's snapshot had imaged a running disk.
    """
    sid = int(facts["server"]["id"])
    holder = store.holder(sid)
    if holder is None:
        raise exc
    if not queue:
        raise ServerBusy(sid, holder) from exc
    heading = _where_it_leaves(_run_ahead(store, sid, holder)) or HEADING.get(exc.status)
    if heading is None:
        raise exc
    return {**facts, "server": {**facts["server"], "status": heading}}


def _as_its_holder_leaves(
    client: HcloudClient, store: RunStore, server: Any, known: Lookups | None
) -> tuple[Any, Lookups | None, str | None]:
    """Return the server (by id), the lookups to plan a queued run with, and the server's status now where
    that plan is for another: where the run ahead of it leaves the server (None: planned for its status).

    A queued run starts when the run ahead of it ends: behind a snapshot that had the server off, planned as
    off, it was refused as it started (the server was running again), and a reset-password needing a running
    server was refused outright (an outside test). The plan is checked against the status again as it starts.
    """
    known = known if known is not None else Lookups()
    srv = find_server(client, server, known)
    holder = store.holder(int(srv["id"]))
    leaves = _where_it_leaves(_run_ahead(store, int(srv["id"]), holder)) if holder is not None else None
    if leaves is None or leaves == srv["status"]:
        return server, known, None
    known.servers[int(srv["id"])] = {**srv, "status": leaves}
    return int(srv["id"]), known, str(srv["status"])


def _run_ahead(store: RunStore, server_id: int, holder: str) -> dict[str, Any] | None:
    """Return the run a new queued run would follow: the last still queued behind the server, else its
    holder (a reviewer: behind a snapshot and a power-off queued after it, the plan was the snapshot's)."""
    for run_id in reversed(store.queued(server_id)):
        run = store.get(run_id, live=False)
        if run is not None and run["state"] == "queued":
            return run
    return store.get(holder, live=False)


def _where_it_leaves(run: dict[str, Any] | None) -> str | None:
    """Return the status a run's plan leaves its server in: its last step that brings the server to running
    or off (a snapshot's power on), else the status it found (None: not a run, or not known)."""
    if run is None:
        return None
    targets = [ACTIONS[s["action"]].target for s in run["steps"] if s.get("action") in ACTIONS]
    settled = [t for t in targets if t in SETTLED]
    before = run.get("server_status_before")
    return settled[-1] if settled else before if before in SETTLED else None


def cancel_run(store: RunStore, run_id: str, by: str | None = None) -> dict[str, Any]:
    """Cancel a run: a queued one at once; a running one before its next step (its action is waited out).

    ``by`` (a user@host, an API key's name, a job) is recorded as the run's ``cancelled_by``.
    """
    run = store.get(run_id, live=False)
    if run is None:
        raise NotFound.record("run", run_id, "run_id")
    if run["state"] in FINAL:
        raise BadInput(f"run {run_id} already ended ({run['state']}); nothing to cancel", "run_id")
    who = check_submitter(by, "by")
    store.request_cancel(run_id)
    if run["state"] == "queued" and store.unqueue(run["server_id"], run_id):
        store.set_state(run_id, "cancelled", finished=store.clock(), cancelled_by=who)
        return {"run_id": run_id, "state": "cancelled"}
    store.set_state(run_id, "cancelling", cancelled_by=who)
    return {"run_id": run_id, "state": "cancelling"}

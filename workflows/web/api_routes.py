"""``/api/v1``: runs, fleet jobs, maintenance windows, the API budget, and the workflows themselves.

Each route is a thin layer over the Python API the CLI uses (``workflows.api``) and the same input models
(``workflows.specs``), so a refusal here carries the CLI's message. Writes take an ``Idempotency-Key``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from workers.errors import BadInput, HcloudFlowError, NotTaken, ServerBusy
from workers.projects import check_project_name, in_project
from workers.run_store import ACTIVE, FINAL
from workflows.fleet_plan import JOB_CONTROLS
from workflows.notify import check_urls
from workflows.specs import FleetSpec, WindowSpec
from workflows.validate import require_unicode

from .auth import Operator, Viewer, who
from .idempotency import check_key
from .keys import ApiKey
from .models import RetryRequest, RunRequest, WindowPatch
from .services import Services
from .strict import strict_request

__all__ = ["probes", "redact", "router"]

router = APIRouter(prefix="/api/v1", dependencies=[Depends(strict_request)])

RUN_STATES = sorted(ACTIVE | FINAL)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def redact(record: Any) -> Any:
    """A run, job or window as shown over HTTP: sealed root passwords say where to get them instead (never
    sent), and a rebuild's user data is its fingerprint (a job and a window keep the text to start servers
    with; a viewer key read it)."""
    from workers.user_data import shown

    if isinstance(record, dict):
        out = {}
        for k, v in record.items():
            if k == "user_data" and isinstance(v, str):
                out[k] = shown(v)
            elif k == "root_password" and v:
                dropped = isinstance(v, dict) and not v.get("sealed")
                out[k] = (
                    (v.get("notice") or "dropped")
                    if dropped
                    else "sealed: `hcloud-flow secret RUN_ID` on a host that holds the sealing key"
                )
            else:
                out[k] = redact(v)
        return out
    if isinstance(record, list):
        return [redact(v) for v in record]
    return record


def _idempotent(
    request: Request, key: ApiKey, payload: Any, produce: Callable[[], tuple[int, Any]]
) -> JSONResponse:
    """Answer a write once per Idempotency-Key: a retry gets the first answer and starts nothing."""
    services = _services(request)
    unicode_only(payload)
    idem = check_key(request.headers.get("idempotency-key"))
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    claim = services.idempotency.claim(key.name, idem, request.method, request.url.path, body)
    if claim.answer is not None:
        return JSONResponse(
            claim.answer["content"],
            status_code=claim.answer["status"],
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        status, content = produce()
    except (BadInput, ServerBusy, NotTaken, redis.ConnectionError):
        claim.release()  # nothing was started: a retry may try again (and gets the same refusal if bad)
        raise
    except HcloudFlowError as exc:
        # A worker took the request but did not answer: it may still start. A retry must not start another.
        content = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        claim.finish(504, content)
        return JSONResponse(content, status_code=504)
    except Exception:
        claim.release()  # a failure of ours: the key must not hold a retry off for the pending time
        raise
    claim.finish(status, content)
    return JSONResponse(content, status_code=status)


def unicode_only(payload: Any) -> None:
    require_unicode(payload, "the body")


# -- runs ---------------------------------------------------------------------------------------------------


@router.post("/runs", status_code=202, summary="Submit a workflow run for one server")
def submit_run(body: RunRequest, request: Request, key: Operator) -> JSONResponse:
    from workflows.validate import check_params, check_server_ref, workflow_named

    services = _services(request)
    if body.server is not None:
        check_server_ref(body.server)
    check_params(workflow_named(body.workflow), body.params)  # refused here, before anything is sent
    check_urls(body.notify)
    if body.project is not None:
        check_project_name(body.project)

    def produce() -> tuple[int, Any]:
        answer = services.runs.submit_full(
            body.workflow, server=body.server, queue=body.queue, timeout=services.submit_timeout,
            submitted_by=who(key), notify=body.notify, project=body.project, **body.params,
        )  # fmt: skip
        return 202, {**answer, "links": {"run": f"/api/v1/runs/{answer['run_id']}"}}

    return _idempotent(request, key, body.model_dump(mode="json"), produce)


@router.get("/runs", summary="List runs, newest first")
def list_runs(
    request: Request,
    key: Viewer,
    state: str | None = Query(None, description=f"one of {', '.join(RUN_STATES)}"),
    server: str | None = Query(None, description="server id or name", max_length=255),
    workflow: str | None = Query(None, max_length=64),
    since: str | None = Query(None, description="runs created after: UNIX time or ISO 8601", max_length=64),
    project: str | None = Query(
        None, description="the project's runs only (as `list --project`)", max_length=64
    ),
    limit: int = Query(50, ge=1, le=500),
) -> list[dict[str, Any]]:
    from workers.ids import is_id
    from workflows.validate import workflow_named

    if state is not None and state not in RUN_STATES:
        raise BadInput(f"state must be one of {', '.join(RUN_STATES)}, not {state!r}", "state")
    if project is not None:
        check_project_name(project)
    if workflow is not None:
        workflow_named(workflow)
    after = _since(since)
    server_id = int(server) if server is not None and is_id(server) else None
    filtered = any(v is not None for v in (state, workflow, after, project)) or (
        server is not None and server_id is None
    )
    found = _services(request).runs.list(
        active=state in ACTIVE, server_id=server_id, limit=5000 if filtered else limit
    )
    out = [
        r
        for r in found
        if (state is None or r["state"] == state)
        and (workflow is None or r["workflow"] == workflow)
        and (after is None or (r.get("created") or 0) > after)
        and (server is None or server_id is not None or r.get("server_name") == server)
        and in_project(r, project)
    ]
    return list(redact(out[:limit]))


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    import math

    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise BadInput(f"since must be a finite UNIX time, not {value!r}", "since")
        return number
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"since must be a UNIX time or an ISO 8601 time, not {value!r}", "since") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@router.get("/runs/{run_id}", summary="Read a run: state, steps with action ids and progress, errors")
def read_run(run_id: str, request: Request, key: Viewer) -> dict[str, Any]:
    return dict(redact(_services(request).runs.status(ident(run_id, "run_id"))))


@router.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a run before its next step")
def cancel_run(run_id: str, request: Request, key: Operator) -> JSONResponse:
    services = _services(request)
    rid = ident(run_id, "run_id")
    return _idempotent(request, key, {"run_id": rid}, lambda: (202, services.runs.cancel(rid, by=who(key))))


def ident(value: str, field: str) -> str:
    if not 1 <= len(value) <= 64 or not value.replace("-", "").isalnum():
        raise BadInput(f"{field} {value[:80]!r} is not an id of ours", field)
    return value


# -- fleet jobs ---------------------------------------------------------------------------------------------


@router.post("/jobs", status_code=202, summary="Start a fleet job (or plan it: dry_run=true)")
def start_job(
    body: FleetSpec,
    request: Request,
    key: Operator,
    dry_run: bool = Query(False, description="return the plan and its API budget; start nothing"),
) -> JSONResponse:
    services = _services(request)
    spec = body.model_dump(mode="json")
    workflow = spec.pop("workflow")
    if dry_run:
        unicode_only(spec)
        return JSONResponse(services.jobs.plan(workflow, timeout=services.submit_timeout, **spec))

    def produce() -> tuple[int, Any]:
        job = services.jobs.start(workflow, timeout=services.submit_timeout, submitted_by=who(key), **spec)
        return 202, {**job, "links": {"job": f"/api/v1/jobs/{job['id']}"}}

    return _idempotent(request, key, {"workflow": workflow, **spec}, produce)


@router.get("/jobs", summary="List fleet jobs, newest first")
def list_jobs(
    request: Request,
    key: Viewer,
    project: str | None = Query(
        None, description="the project's jobs only (as `job list --project`)", max_length=64
    ),
    limit: int = Query(50, ge=1, le=500),
) -> list[dict[str, Any]]:
    return list(redact(_services(request).jobs.list(limit, project)))


@router.get("/jobs/{job_id}", summary="Read a fleet job: counts, each server's outcome, who steered it")
def read_job(job_id: str, request: Request, key: Viewer) -> dict[str, Any]:
    return dict(redact(_services(request).jobs.status(ident(job_id, "job_id"))))


def _job_control(verb: str) -> Callable[..., JSONResponse]:
    def control(job_id: str, request: Request, key: Operator) -> JSONResponse:
        services = _services(request)
        jid = ident(job_id, "job_id")

        def produce() -> tuple[int, Any]:
            return 202, services.jobs.control(jid, verb, timeout=services.submit_timeout, by=who(key))

        return _idempotent(request, key, {"job_id": jid, "verb": verb}, produce)

    return control


for _verb, _summary in JOB_CONTROLS.items():
    router.add_api_route(
        f"/jobs/{{job_id}}/{_verb}", _job_control(_verb), methods=["POST"], status_code=202, summary=_summary
    )


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    summary="Start a new job over an ended job's failed and/or not started servers (same options)",
)
def retry_job(job_id: str, body: RetryRequest, request: Request, key: Operator) -> JSONResponse:
    services = _services(request)
    jid = ident(job_id, "job_id")

    def produce() -> tuple[int, Any]:
        answer = services.jobs.retry(
            jid,
            failed=body.failed,
            not_started=body.not_started,
            timeout=services.submit_timeout,
            by=who(key),
            user_data=body.user_data,
        )
        return 202, redact(answer)

    return _idempotent(request, key, {"job_id": jid, "retry": body.model_dump()}, produce)


# -- maintenance windows ------------------------------------------------------------------------------------


def _window_view(services: Services, record: dict[str, Any]) -> dict[str, Any]:
    from workflows.windows import with_next_firing

    return dict(redact(with_next_firing(record, services.clock())))


@router.get("/windows", summary="List maintenance windows with their next firing")
def list_windows(request: Request, key: Viewer) -> list[dict[str, Any]]:
    services = _services(request)
    found = (services.windows.get(n) for n in services.windows.names())
    return [_window_view(services, w) for w in found if w is not None]


@router.post("/windows", status_code=201, summary="Add a maintenance window")
def add_window(
    body: WindowSpec,
    request: Request,
    key: Operator,
    check: bool = Query(True, description="plan the window's job now through a worker (servers, image)"),
) -> JSONResponse:
    return _save_window(request, key, body.model_dump(mode="json"), check, replace=False)


@router.patch(
    "/windows/{name}",
    summary="Change a maintenance window (only the fields given; params merge, a parameter null goes back "
    "to its default); 409 if it changed meanwhile",
)
def edit_window(
    name: str,
    body: WindowPatch,
    request: Request,
    key: Operator,
    check: bool = Query(True, description="plan the window's job now through a worker (servers, image)"),
) -> JSONResponse:
    from workflows.windows import edited, window_fields

    services = _services(request)
    record = _window(services, name)
    given = body.model_dump(exclude_unset=True)
    fields = edited(window_fields(record), given)
    return _save_window(request, key, fields, check, replace=True, based_on=record.get("revision", 0))


def _save_window(
    request: Request,
    key: ApiKey,
    fields: dict[str, Any],
    check: bool,
    *,
    replace: bool,
    based_on: int | None = None,
) -> JSONResponse:
    from workflows.api import check_window_at_the_api
    from workflows.windows import validate_window

    services = _services(request)
    window = validate_window(fields)

    def produce() -> tuple[int, Any]:
        if check:
            check_window_at_the_api(window, services.submit_timeout)
        saved = services.windows.save(window, replace=replace, by=who(key), based_on=based_on)
        return (200 if replace else 201), _window_view(services, saved)

    return _idempotent(request, key, {"window": window, "check": check}, produce)


def _window(services: Services, name: str) -> dict[str, Any]:
    from workers.errors import NotFound
    from workflows.cron import WINDOW_NAME

    record = services.windows.get(name) if WINDOW_NAME.match(name) else None
    if record is None:
        raise NotFound(f"no window named {name[:80]!r}", "name")
    return dict(record)


@router.get("/windows/{name}", summary="Read a maintenance window and its last ten firings")
def read_window(name: str, request: Request, key: Viewer) -> dict[str, Any]:
    services = _services(request)
    return {**_window_view(services, _window(services, name)), "history": services.windows.history(name, 10)}


@router.get("/windows/{name}/history", summary="A window's firings: when, the outcome, the job it started")
def window_history(
    name: str, request: Request, key: Viewer, limit: int = Query(50, ge=1, le=200)
) -> list[dict[str, Any]]:
    services = _services(request)
    _window(services, name)
    return list(services.windows.history(name, limit))


@router.post("/windows/{name}/pause", summary="Pause a window: it does not fire until resumed")
def pause_window(name: str, request: Request, key: Operator) -> dict[str, Any]:
    services = _services(request)
    _window(services, name)
    return _window_view(services, services.windows.set_paused(name, True, by=who(key)))


@router.post("/windows/{name}/resume", summary="Resume a paused window")
def resume_window(name: str, request: Request, key: Operator) -> dict[str, Any]:
    services = _services(request)
    _window(services, name)
    return _window_view(services, services.windows.set_paused(name, False, by=who(key)))


@router.delete("/windows/{name}", summary="Remove a window (a job it started goes on)")
def remove_window(name: str, request: Request, key: Operator) -> dict[str, Any]:
    services = _services(request)
    _window(services, name)
    services.windows.remove(name)
    return {"name": name, "removed": True}


# -- the rest -----------------------------------------------------------------------------------------------


@router.get("/budget", summary="The API rate budget per project: remaining, limit, refill, bulk reserve")
def budget(request: Request, key: Viewer) -> dict[str, Any]:
    from .state import budgets

    services = _services(request)
    return {"projects": budgets(services.redis, services.clock(), services.refill)}


@router.get("/status", summary="Whether workers, the monitor and beat are alive; the queue's length")
def status(request: Request, key: Viewer) -> dict[str, Any]:
    return dict(_services(request).liveness.read())


@router.get("/workflows", summary="The workflows, their steps and the JSON schema of their parameters")
def workflows(key: Viewer) -> list[dict[str, Any]]:
    from workflows.definitions import WORKFLOWS
    from workflows.param_models import schema_for

    return [
        {
            "name": w.name,
            "summary": w.summary,
            "steps": [s.name for s in w.steps],
            "params_schema": schema_for(w.name),
        }
        for w in WORKFLOWS.values()
    ]


# The probe reads nothing but Redis's answer: a query string (a prober's cache-buster) changes nothing, so it
# is not refused (strict_request), and HEAD answers too: some load balancers probe with it (it was a 405).
probes = APIRouter(prefix="/api/v1")


@probes.head("/health", include_in_schema=False)
@probes.get("/health", summary="For load balancers and compose: 200 when Redis answers (no key needed)")
def health(request: Request) -> dict[str, Any]:
    _services(request).redis.ping()
    return {"ok": True}

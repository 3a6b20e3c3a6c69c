"""The Python API: submit, read, cancel and wait for runs.

    import workflows
    run_id = workflows.submit("snapshot", server="web-1", description="before upgrade")
    workflows.wait(run_id, timeout=600)["state"]      # "succeeded"

Submitting goes through the ``hcloud_flow.submit`` task, so the caller needs the broker (Redis) but not the
API token; reading and cancelling need only Redis.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from workers.errors import BadInput, HcloudFlowError, NotFound, NotTaken, RecordLost, StillRunning
from workers.labels import check_selector
from workers.projects import check_project_name
from workers.run_store import FINAL, RunStore, has_ended

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "Jobs",
    "Runs",
    "cancel",
    "check_window_at_the_api",
    "default",
    "jobs",
    "list_runs",
    "status",
    "submit",
    "wait",
]

# The most records one list call returns (the HTTP API's own pages are smaller).
MAX_LIST = 5000


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_limit(limit: Any) -> int:
    """Return a list call's limit, or refuse it (a negative one read every record kept)."""
    if not _whole(limit) or not 1 <= limit <= MAX_LIST:
        raise BadInput(f"limit must be a whole number from 1 to {MAX_LIST}, not {limit!r:.40}", "limit")
    return int(limit)


# The worker tasks whose request starts something (a run, a job): a late answer may mean a late start.
_STARTING = frozenset({"hcloud_flow.submit", "hcloud_flow.fleet_start"})
# Past its expiry, a task a worker had already started still answers: wait this much longer for that answer.
_EXPIRY_GRACE = 2.0


def call_worker(
    app: Celery, client: Any, name: str, kwargs: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Send a task to the workers and wait for its answer; say plainly when nobody can answer."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    client.ping()  # an unreachable Redis fails here, fast, before anything is sent
    # The message expires when the caller stops waiting: a worker that takes it later drops it unrun (Celery
    # checks the expiry again just before it runs a task), so a request reported as not taken never runs.
    pending = app.send_task(name, kwargs=kwargs, expires=timeout)
    try:
        try:
            return dict(pending.get(timeout=timeout + _EXPIRY_GRACE))
        except CeleryTimeout:
            if pending.state != "STARTED":
                raise
            # Taken just before it expired: it runs, so its answer is the truth; wait for it (bounded).
            try:
                return dict(pending.get(timeout=timeout))
            except CeleryTimeout:
                # Only a request that starts something can start it late; a read merely has no answer.
                starts = name in _STARTING
                after = (
                    "; it may still start a run: look with `hcloud-flow list` before submitting again"
                    if starts
                    else " (is the API reachable from the workers?)"
                )
                failure = HcloudFlowError(
                    f"a worker took {name} but has not answered within {2 * timeout:g} s{after}"
                )
    except CeleryTimeout:
        failure = NotTaken(
            f"no worker took {name} within {timeout:g} s, so it expired and will not run: nothing was "
            "started. Is `hcloud-flow worker` running (and reaching Redis)?"
        )
    except RuntimeError as exc:  # Celery's result consumer gave up reconnecting
        failure = HcloudFlowError(f"lost the connection to Redis while waiting for {name}: {exc}")
    finally:
        # Stop listening now: left to AsyncResult.__del__ at interpreter exit, Celery's clean-up fails noisily
        # ("ImportError: sys.meta_path is None").
        with contextlib.suppress(Exception):
            app.backend.remove_pending_result(pending)
        pending.backend = None
    raise failure


def default_submitter() -> str:
    """Return who submits from this process, as user@host (recorded with each run)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


T = TypeVar("T")

# How long a wait rides out a Redis it cannot reach (a restart, a failover) before it gives up.
REDIS_PATIENCE = 60.0


def read_riding_out(
    read: Callable[[], T],
    deadline: float | None,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Return ``read()``, asking again while Redis cannot be reached, for up to ``REDIS_PATIENCE`` seconds
    (and not past ``deadline``); then raise the last error. A 3-second Redis restart ended a `--wait` with
    exit 3 while the job it followed went on (an outside test)."""
    since = clock()
    while True:
        try:
            return read()
        except (redis.ConnectionError, redis.TimeoutError):
            now = clock()
            if now - since >= REDIS_PATIENCE or (deadline is not None and now > deadline):
                raise
            sleep(max(poll, 0.5))


def wait_for_end(
    read: Callable[[], dict[str, Any]],
    what: str,
    timeout: float | None,
    poll: float,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    follow: str = "hcloud-flow list",
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Read a run or job record until its state is final (runs and jobs share those three states).

    Raises StillRunning when ``timeout`` passes first: the run or job goes on, and ``follow`` says how to
    follow it. A Redis that cannot be reached is asked again for a while (``read_riding_out``).
    """
    deadline = None if timeout is None else clock() + timeout
    seen = False
    while True:
        try:
            record = read_riding_out(read, deadline, poll, sleep, clock)
        except NotFound:
            if not seen:
                raise  # never there: a wrong id, bad input
            # There a moment ago: "no such job" and exit 2 (bad input) told an outside tester nothing of a
            # job whose servers were half-way through.
            raise RecordLost(what) from None
        seen = True
        if on_update is not None:
            on_update(record)
        if has_ended(record):
            return record
        if deadline is not None and timeout is not None and clock() > deadline:
            raise StillRunning(what, record["state"], float(timeout), follow)
        sleep(poll)


class _SendsThrough:
    """What talks to the workers through a Celery app: given one, or the installation's, imported when a
    message is first sent (a read needs Redis alone, and importing the workers' app cost a CLI read half a
    second)."""

    def __init__(self, app: Celery | None, store: Any) -> None:
        self._app = app
        self.store = store

    @property
    def app(self) -> Celery:
        if self._app is None:
            from workers.celery_app import app

            self._app = app
        return self._app


class Runs(_SendsThrough):
    """Runs of one hcloud-flow installation (one Redis, one set of workers)."""

    store: RunStore

    def submit(
        self,
        workflow: str,
        *,
        server: int | str | None = None,
        queue: bool = False,
        timeout: float = 60.0,
        project: str | None = None,
        **params: Any,
    ) -> str:
        """Validate and start a run (in ``project``, else the workers' default); return its id. Raises
        BadInput or ServerBusy, nothing enqueued."""
        answer = self.submit_full(
            workflow, server=server, queue=queue, timeout=timeout, project=project, **params
        )
        return str(answer["run_id"])

    def submit_full(
        self,
        workflow: str,
        *,
        server: int | str | None = None,
        queue: bool = False,
        timeout: float = 60.0,
        submitted_by: str | None = None,
        notify: list[str] | None = None,
        project: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Like submit, but return the whole answer (run id, state, planned steps, queued_behind).

        ``submitted_by`` is recorded with the run (default: this process's user@host); ``notify`` names
        webhook URLs told when the run starts and ends; ``project`` the project it acts in.
        """
        if project is not None:
            check_project_name(project)  # refused here, before anything is sent
        kwargs = {
            "project": project,
            "workflow": workflow,
            "server": server,
            "params": params,
            "queue": queue,
            "submitted_by": submitted_by or default_submitter(),
            "notify": notify or [],
        }
        return call_worker(self.app, self.store.redis, "hcloud_flow.submit", kwargs, timeout)

    def status(self, run_id: str) -> dict[str, Any]:
        """Return the run record, with live step progress."""
        run = self.store.get(run_id)
        if run is None:
            raise NotFound.record("run", run_id, "run_id")
        run.pop("chain", None)
        return run

    def cancel(self, run_id: str, *, by: str | None = None) -> dict[str, Any]:
        """Cancel a run before its next step; ``by`` (default: this process's user@host) is recorded."""
        from .submission import cancel_run

        return cancel_run(self.store, run_id, by or default_submitter())

    def servers(
        self, selector: str | None = None, *, timeout: float = 60.0, project: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the project's servers (or those the label selector picks), each with the run holding it."""
        if selector is not None:
            check_selector(selector)  # refused here, before anything is sent
        if project is not None:
            check_project_name(project)
        kwargs = {"selector": selector, "project": project}
        answer = call_worker(self.app, self.store.redis, "hcloud_flow.servers", kwargs, timeout)
        return list(answer["servers"])

    def images(self, *, timeout: float = 60.0, project: str | None = None) -> list[dict[str, Any]]:
        """Return the project's snapshots and backups, each with the run of ours that made it."""
        if project is not None:
            check_project_name(project)
        answer = call_worker(self.app, self.store.redis, "hcloud_flow.images", {"project": project}, timeout)
        return list(answer["images"])

    def prune_images(
        self,
        *,
        selector: str | None = None,
        servers: list[int | str] | None = None,
        keep: int | None = None,
        keep_within: int | str | None = None,
        dry_run: bool = False,
        project: str | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Apply a retention policy to the snapshots hcloud-flow made of the servers picked; return, per
        server, what was deleted (or, with ``dry_run``, would be), what failed and what was kept and why."""
        from .retention import check_policy
        from .specs import Targets, checked

        check_policy(keep, keep_within, required=True)  # refused here, before anything is sent
        checked(Targets, {"selector": selector, "servers": servers, "project": project})
        kwargs = {
            "selector": selector,
            "servers": servers,
            "keep": keep,
            "keep_within": keep_within,
            "dry_run": dry_run,
            "project": project,
        }
        return call_worker(self.app, self.store.redis, "hcloud_flow.images_prune", kwargs, timeout)

    def list(
        self, *, active: bool = False, server_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Return runs, newest first."""
        if not isinstance(active, bool):
            raise BadInput("active must be true or false", "active")
        if server_id is not None and (not _whole(server_id) or server_id <= 0):
            raise BadInput(f"server_id must be a positive server id, not {server_id!r:.40}", "server_id")
        runs = self.store.list(active=active, server_id=server_id, limit=check_limit(limit))
        for run in runs:
            run.pop("chain", None)
        return runs

    def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Wait until the run ends (or ``timeout`` passes, then raise); return its record."""
        return wait_for_end(
            lambda: self.status(run_id),
            f"run {run_id}",
            timeout,
            poll,
            on_update,
            sleep,
            follow=f"hcloud-flow status {run_id} --wait",
        )


class Jobs(_SendsThrough):
    """Fleet jobs of one installation: start and plan go through a worker (they need the API)."""

    def _call(self, name: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        return call_worker(self.app, self.store.redis, name, kwargs, timeout)

    def start(
        self, workflow: str, *, timeout: float = 120.0, submitted_by: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Validate and start a fleet job; return its record (``id``, servers, limits, state).

        ``submitted_by`` (default: this process's user@host) is recorded with the job and its runs.
        """
        by = submitted_by or default_submitter()
        return self._call("hcloud_flow.fleet_start", timeout, workflow=workflow, submitted_by=by, **options)

    def plan(self, workflow: str, *, timeout: float = 120.0, **options: Any) -> dict[str, Any]:
        """Return the dry-run plan of a fleet job; nothing starts."""
        return self._call("hcloud_flow.fleet_plan", timeout, workflow=workflow, **options)

    def control(
        self, job_id: str, verb: str, *, timeout: float = 60.0, by: str | None = None
    ) -> dict[str, Any]:
        """Pause, resume, cancel, approve or reject a job (``fleet_plan.JOB_CONTROLS``); ``by`` (default:
        this process's user@host) is recorded."""
        by = by or default_submitter()
        return self._call("hcloud_flow.fleet_control", timeout, job_id=job_id, verb=verb, by=by)

    def retry(
        self,
        job_id: str,
        *,
        failed: bool = True,
        not_started: bool = False,
        timeout: float = 120.0,
        by: str | None = None,
        user_data: str | None = None,
    ) -> dict[str, Any]:
        """Start a new job over an ended job's failed and/or not started servers (same workflow and
        options, linked to the first); return the new job's record. ``user_data``: the job's own, given
        again once the job keeps only its fingerprint (as soon as it has started its last server)."""
        by = by or default_submitter()
        given = {} if user_data is None else {"user_data": user_data}
        return self._call(
            "hcloud_flow.fleet_retry",
            timeout,
            job_id=job_id,
            failed=failed,
            not_started=not_started,
            by=by,
            **given,
        )

    def status(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound.record("fleet job", job_id, "job_id")
        return dict(job)

    def _until_final(self, job_id: str) -> dict[str, Any]:
        """Return the job's state alone while it runs, its whole record once that state is final.

        A waiter with nothing to show meanwhile read every server's outcome at every look: on a job of 400
        servers read every 50 ms, a twentieth of a core taken from the workers running it.
        """
        state = self.store.state(job_id)
        if state is None:
            raise NotFound.record("fleet job", job_id, "job_id")
        return self.status(job_id) if state in FINAL else {"id": job_id, "state": state}

    def list(self, limit: int = 50, project: str | None = None) -> list[dict[str, Any]]:
        """Return the newest jobs, or those of ``project`` (checked as a project name)."""
        if project is not None:
            check_project_name(project)
        return list(self.store.list(check_limit(limit), project))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the job ends; return its record."""
        return wait_for_end(
            lambda: self.status(job_id) if on_update is not None else self._until_final(job_id),
            f"fleet job {job_id}",
            timeout,
            poll,
            on_update,
            follow=f"hcloud-flow job status {job_id} --wait",
        )


def check_window_at_the_api(window: dict[str, Any], timeout: float = 60.0) -> None:
    """Plan a window's job now, as `fleet --dry-run` does (through a worker, which holds the token): servers
    that do not exist, a selector that matches none, an image that is not there are refused today, not at
    3 a.m. when the window fires. Nothing starts."""
    from .specs import FleetSpec

    fields = {k: window[k] for k in FleetSpec.model_fields if k != "workflow"}
    try:
        jobs().plan(window["workflow"], timeout=timeout, **fields)
    except BadInput:
        raise
    except HcloudFlowError as exc:
        raise HcloudFlowError(f"{exc} (--no-check stores the window without asking the API)") from exc


_default: Runs | None = None


def jobs() -> Jobs:
    """Return the fleet jobs of the installation that celeryconfig's environment points at."""
    from .job_store import JobStore

    runs = default()
    return Jobs(runs._app, JobStore(runs.store.redis, retention=runs.store.retention))


def default() -> Runs:
    """Return the Runs of the installation that celeryconfig's environment points at."""
    global _default
    if _default is None:
        import celeryconfig
        from workers.redis_client import redis_for

        settings: dict[str, Any] = celeryconfig.hcloud_flow  # the workers' own, read from the same env
        retention = float(settings.get("retention", 7 * 86400))
        _default = Runs(None, RunStore(redis_for(celeryconfig.broker_url), retention=retention))
    return _default


def submit(
    workflow: str,
    *,
    server: int | str | None = None,
    queue: bool = False,
    project: str | None = None,
    **params: Any,
) -> str:
    """Validate and start a run on the configured installation (in ``project``, else its default); return
    its id."""
    return default().submit(workflow, server=server, queue=queue, project=project, **params)


def status(run_id: str) -> dict[str, Any]:
    return default().status(run_id)


def cancel(run_id: str) -> dict[str, Any]:
    return default().cancel(run_id)


def wait(run_id: str, *, timeout: float | None = None) -> dict[str, Any]:
    return default().wait(run_id, timeout=timeout)


def list_runs(*, active: bool = False, server_id: int | None = None) -> list[dict[str, Any]]:
    return default().list(active=active, server_id=server_id)


def prune_images(**policy: Any) -> dict[str, Any]:
    """``Runs.prune_images`` of the default installation (``selector`` or ``servers``, ``keep``,
    ``keep_within``, ``dry_run``, ``project``)."""
    return default().prune_images(**policy)

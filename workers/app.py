"""The Celery app: settings from celeryconfig, the action tasks, and the monitor thread in each worker."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery.signals import worker_init, worker_ready, worker_shutdown

import celeryconfig

from .celery_app import app
from .continuation import CeleryDispatcher
from .deferred import Deferred
from .engine import Engine
from .errors import ConfigError
from .monitor import Monitor
from .projects import Projects
from .redis_client import redis_for
from .run_store import RunStore, chain_holder
from .runs import RunHooks
from .runtime import engine_for, register_projects, wait_prefix
from .wait_state import Wait

__all__ = ["app", "engine", "hooks", "projects", "run_store", "start_monitor", "stop_monitor"]

log = logging.getLogger(__name__)


_stop = threading.Event()
_redis: redis.Redis | None = None
_threads: list[threading.Thread] = []
_projects: Projects | None = None


def projects() -> Projects:
    """Return the projects this process serves (celeryconfig), read once."""
    global _projects
    if _projects is None:
        _projects = celeryconfig.projects()
    return _projects


def engine(project: str | None = None) -> Engine:
    """Return this process's Engine (client, ledger, waits) of ``project`` (the default project for None).

    Raises BadInput for a project this worker does not serve.
    """
    return engine_for(app, projects().get(project), celeryconfig.secret_key)


def run_store() -> RunStore:
    """Return a RunStore on the configured Redis; needs no API token (the CLI reads runs without one)."""
    global _redis
    if _redis is None:
        _redis = redis_for(app.conf.broker_url)
    return RunStore(_redis, retention=float(app.conf.hcloud_flow.get("retention", 7 * 86400)))


def hooks() -> RunHooks:
    """Return the run hooks that keep run records in step with their chains."""
    return RunHooks(run_store(), app, status_of=_server_status)


def _server_status(run: dict[str, Any]) -> str:
    """The status of a run's server now, read in the run's project (a queued run's plan is checked
    against it when the run starts)."""
    return str(engine(run.get("project")).client.get_server(int(run["server_id"]))["status"])


def start_monitor() -> None:
    """Start this worker's monitor threads, one per project (every worker runs them; a lock takes turns)."""
    if _threads or not app.conf.hcloud_flow.get("monitor", True):
        return
    _stop.clear()
    # The round lock lapses one request timeout after its holder died, so a killed worker stalls polling
    # for seconds, not minutes; a live holder renews it before every request.
    lock_ttl = float(app.conf.hcloud_flow.get("request_timeout", 30.0)) + 10.0
    served = projects()
    for name in served.names():
        eng = engine(name)
        # Deferred task messages (fleet jobs' later advances) belong to no project: the default project's
        # monitor sends them.
        own_deferred = name == served.default
        monitor = Monitor(
            eng,
            CeleryDispatcher(app, hooks()),
            prefix=wait_prefix(name),
            lock_ttl=lock_ttl,
            gap=float(app.conf.hcloud_flow.get("monitor_gap", 0.25)),
            on_end=_step_ended,
            send=(lambda task, kwargs: app.send_task(task, kwargs=kwargs)) if own_deferred else None,
            deferred=Deferred(eng.redis) if own_deferred else None,
        )
        thread = threading.Thread(
            target=monitor.run_forever, args=(_stop,), name=f"hcloud-flow-monitor-{name}", daemon=True
        )
        thread.start()
        _threads.append(thread)
    log.info("hcloud-flow monitor started for %s", ", ".join(served.names()))


def _step_ended(wait: Wait, succeeded: bool) -> None:
    """Free the server after the last step of an action chain sent outside a run (runs free their own)."""
    if wait.run_id is None and (not succeeded or not wait.request.get("chain")):
        run_store().release(wait.server_id, chain_holder(wait.request.get("root_id"), wait.id))


def stop_monitor() -> None:
    """Stop the monitor threads and wait for their rounds to end."""
    _stop.set()
    while _threads:
        _threads.pop().join(timeout=30)


@worker_init.connect
def _refuse_to_start_misconfigured(**_: object) -> None:
    """Stop a worker that could do nothing (no token, a malformed sealing key) before it says "ready"."""
    try:
        for name in projects().names():
            engine(name)
    except ConfigError as exc:
        log.critical("hcloud-flow worker cannot start: %s", exc)
        # SystemExit, not an Exception: Celery logs and swallows those raised by signal receivers.
        raise SystemExit(f"hcloud-flow worker cannot start: {exc}") from None


@worker_ready.connect
def _on_worker_ready(**_: object) -> None:
    register_projects(engine().redis, projects())
    start_monitor()


@worker_shutdown.connect
def _on_worker_shutdown(**_: object) -> None:
    stop_monitor()

"""What the web service talks to, built once from the environment (or handed in by tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from workflows.api import Jobs, Runs
from workflows.windows import WindowStore

from .auth import Sessions
from .idempotency import IdempotencyStore
from .keys import KeyFile
from .state import Liveness

__all__ = ["Services", "from_environment"]


@dataclass
class Services:
    runs: Runs
    jobs: Jobs
    windows: WindowStore
    redis: redis.Redis
    keys: KeyFile
    sessions: Sessions
    idempotency: IdempotencyStore
    liveness: Liveness
    refill: float = 0.0  # the rate budget's refill per second when set (a fast simulator), else limit/3600
    submit_timeout: float = 30.0
    clock: Callable[[], float] = field(default=time.time)


def from_environment(keys_file: str) -> Services:
    """The services of the installation celeryconfig's environment points at (Redis only; no token)."""
    from celery import Celery

    from workers.app import app, run_store
    from workflows.api import default, jobs

    runs = default()
    client = run_store().redis

    def ping() -> int:
        try:
            return len(app.control.ping(timeout=1.0) or [])
        except Exception:  # the broker is away: no worker can be told alive
            return 0

    celery_app: Celery = app
    return Services(
        runs=runs,
        jobs=jobs(),
        windows=WindowStore(client, celery_app),
        redis=client,
        keys=KeyFile(keys_file),
        sessions=Sessions(client),
        idempotency=IdempotencyStore(client),
        liveness=Liveness(client, ping),
        refill=float(app.conf.hcloud_flow.get("rate_refill", 0.0)),
    )

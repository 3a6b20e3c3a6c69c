"""Build the process's Engine from the Celery app's settings, once, on first use."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from .action_ids import HighWater
from .client import HcloudClient
from .counters import Counters
from .durations import Durations
from .engine import Engine
from .errors import ConfigError
from .ledger import Ledger
from .projects import DEFAULT_PROJECT, Project, Projects, variable_suffix
from .rate_budget import RateBudget, bucket_key
from .redis_client import redis_for
from .redis_values import text_hash
from .retry_policy import RetryPolicy
from .sealing import keyring
from .token_health import TokenHealth
from .wait_state import Cadence
from .waits import WaitStore

__all__ = [
    "PROJECTS_KEY",
    "build_engine",
    "claim_ttl_for",
    "engine_for",
    "noted_projects",
    "register_projects",
    "retry_policy_for",
    "shown_url",
    "wait_prefix",
]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def retry_policy_for(base: float) -> RetryPolicy:
    """Return the request retry policy of HCLOUD_FLOW_RETRY_BASE: the whole schedule scales with its first
    backoff (tests shrink it; production keeps 1 s)."""
    return RetryPolicy(base=base, cap=30.0 * base, max_total=120.0 * base)


def claim_ttl_for(request_timeout: float, policy: RetryPolicy) -> float:
    """Return how long a step's claim lives: one request with all its retries, for the thread pool enforces
    no time limit on a step."""
    return request_timeout + policy.max_total + 10.0


def wait_prefix(project: str) -> str:
    """Return the Redis prefix of a project's parked waits and monitor: each project has its own monitor.

    The project named ``default`` (the one a single-project installation has) keeps the prefix that came
    before projects, so waits parked before an upgrade are still found.
    """
    return "hf" if project == DEFAULT_PROJECT else f"hf:p:{project}"


def build_engine(
    settings: dict[str, Any], *, redis_url: str, project: Project, secret_key: str | None
) -> Engine:
    """Return one project's Engine, wired from plain settings (celeryconfig's ``hcloud_flow`` dict)."""
    token = project.token
    suffix = "" if project.name == DEFAULT_PROJECT else f"_{variable_suffix(project.name)}"
    if not token:
        raise ConfigError(
            f"no API token for project {project.name!r}: set HCLOUD_TOKEN{suffix} "
            f"(or HCLOUD_TOKEN{suffix}_FILE, "
            "a file only the workers can read) in the workers' environment"
        )
    if not token.isprintable() or any(c.isspace() for c in token):
        # Sent as given, it failed every request with 401 (two lines in a token file, say).
        raise ConfigError(f"HCLOUD_TOKEN{suffix}: the API token holds spaces or line breaks")
    if secret_key:
        try:
            keyring(secret_key)
        except (ValueError, TypeError) as exc:
            # Found now, not after a password reset whose password could then not be sealed.
            raise ConfigError(
                "HCLOUD_FLOW_SECRET_KEY is not a valid key (or comma-separated keys, newest first); make "
                "one with `hcloud-flow keygen`"
            ) from exc
    store = redis_for(redis_url)
    key = bucket_key(token)
    budget = RateBudget(store, key, refill_per_second=float(settings.get("rate_refill", 0.0)))
    base = float(settings.get("retry_base", 1.0))
    policy = retry_policy_for(base)
    counters = Counters(store)
    token_health = TokenHealth(store, project.name, token)

    def answered(method: str, path: str, status: int) -> None:
        # Every answer, retried ones included: counted by method and status for /metrics, and what it says
        # of the token noted for the worker's healthcheck (workers/token_health.py).
        counters.add("api_requests", (method, str(status)))
        token_health.note(method, path, status)

    client = HcloudClient(
        token,
        base_url=project.endpoint,
        timeout=(5.0, float(settings.get("request_timeout", 30.0))),
        budget=budget,
        policy=policy,
        on_response=answered,
        project=project.name,
        on_retry=lambda method, path: counters.add("api_retries", (method,)),
    )
    retention = float(settings.get("retention", 7 * 86400))
    return Engine(
        client=client,
        redis=store,
        ledger=Ledger(store, retention=retention),
        waits=WaitStore(store, prefix=wait_prefix(project.name)),
        secret_key=secret_key,
        cadence=Cadence(
            first=float(settings.get("poll_first", 1.0)), cap=float(settings.get("poll_cap", 10.0))
        ),
        claim_ttl=claim_ttl_for(float(settings.get("request_timeout", 30.0)), policy),
        shutdown_grace=float(settings.get("shutdown_grace", 60.0)),
        deadlines=dict(settings.get("deadlines") or {}),
        post_policy=policy,
        durations=Durations(store),
        # Per project (the bucket's hashed key): action ids of one project say nothing about another's.
        high_water=HighWater(store, f"{key}:action_ids", fresh_for=float(settings.get("bound_fresh", 5.0))),
        project=project.name,
    )


PROJECTS_KEY = "hf:projects"


def shown_url(url: str) -> str:
    """Return an endpoint as it may be shown: without credentials in it (user:password@, a query)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def noted_projects(store: redis.Redis) -> dict[str, dict[str, Any]]:
    """Return what the workers noted of each project they serve (``register_projects``), by name; an
    entry that cannot be read is left out."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in text_hash(store.hgetall(PROJECTS_KEY)).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out[name] = entry
    return out


def register_projects(store: redis.Redis, projects: Projects) -> None:
    """Note each project's name, endpoint and bucket (never its token) where the CLI and the web service,
    which hold no token, read which projects the workers serve and whose budget is whose."""
    entries: dict[Any, Any] = {
        p.name: json.dumps(
            {
                "endpoint": shown_url(p.endpoint),
                "bucket": bucket_key(p.token).rsplit(":", 1)[1],
                "default": p.name == projects.default,
                "seen": time.time(),
            }
        )
        for p in projects.by_name.values()
        if p.token
    }
    try:
        # Replaced whole: a project taken out of the configuration is not listed on (every worker of one
        # installation serves the same projects).
        pipe = store.pipeline()
        pipe.delete(PROJECTS_KEY)
        if entries:
            pipe.hset(PROJECTS_KEY, mapping=entries)
        pipe.execute()
    except redis.RedisError as exc:  # Redis not up yet: the worker still starts, and notes it next time
        log.warning("could not note the projects in Redis: %s", exc)


def engine_for(app: Any, project: Project, secret_key: Callable[[], str | None]) -> Engine:
    """Return this process's Engine of ``project`` for ``app``, building it on first use (after any fork)."""
    with _lock:
        engine = _engines.get((id(app), project.name))
        if engine is None:
            engine = build_engine(
                app.conf.hcloud_flow, redis_url=app.conf.broker_url, project=project, secret_key=secret_key()
            )
            _engines[(id(app), project.name)] = engine
        return engine

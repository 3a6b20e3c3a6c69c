"""Celery and hcloud-flow settings, read from the environment: the one place the workers read it.

Every variable is documented in the README with its default. The API token and the sealing key are not
settings: they are read by the functions at the bottom, so they never sit in ``app.conf`` (which
``celery inspect conf`` and Flower can display).
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote, urlsplit

from workers.errors import ConfigError
from workers.projects import Projects, projects_from, read_secret


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not a number; unset it or give seconds, e.g. {default}") from exc


def _between(name: str, default: float, low: float, high: float) -> float:
    value = _float(name, default)
    if not low <= value <= high:  # NaN fails this too
        raise SystemExit(
            f"{name}={value!r} is out of range; give seconds from {low:g} to {high:g}, e.g. {default}"
        )
    return value


# Bounds of every number the environment sets (the README's settings table). Out of them a setting did
# harm rather than nothing: a negative retention made a read-only `list` drop every run from the listings.
_DAY = 86400.0
_BOUNDS: dict[str, tuple[float, float]] = {
    "HCLOUD_FLOW_RETENTION": (60.0, 3650 * _DAY),
    "HCLOUD_FLOW_RESULT_EXPIRES": (60.0, 365 * _DAY),
    "HCLOUD_FLOW_VISIBILITY_TIMEOUT": (10.0, 7 * _DAY),
    "HCLOUD_FLOW_POLL_FIRST": (0.05, 3600.0),
    "HCLOUD_FLOW_POLL_CAP": (0.1, 3600.0),
    "HCLOUD_FLOW_SHUTDOWN_GRACE": (0.0, 3600.0),
    "HCLOUD_FLOW_RATE_REFILL": (0.0, 1e6),
    "HCLOUD_FLOW_REQUEST_TIMEOUT": (1.0, 600.0),
    "HCLOUD_FLOW_RETRY_BASE": (0.0, 60.0),
    "HCLOUD_FLOW_BOUND_FRESH": (0.0, 3600.0),
    "HCLOUD_FLOW_FLEET_FRESH": (0.0, 3600.0),
    "HCLOUD_FLOW_BLOCK_RECHECK": (0.5, 3600.0),
    "HCLOUD_FLOW_BEAT_INTERVAL": (1.0, 3600.0),
    "HCLOUD_FLOW_MONITOR_GAP": (0.05, 10.0),
}


def _setting(name: str, default: float) -> float:
    return _between(name, default, *_BOUNDS[name])


def _flag(name: str, default: bool) -> bool:
    """Read an on/off setting; anything else stops the process, naming it (`off` had left the monitor on)."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 1/true/yes/on or 0/false/no/off, not {raw[:20]!r}")


def _deadlines(raw: str) -> dict[str, float]:
    """Parse HCLOUD_FLOW_DEADLINES, e.g. ``create_image=7200,rebuild=1800``."""
    if not raw.strip():
        return {}  # (without the action table's import: every CLI command reads this module)
    from workers.server_actions import ACTIONS

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, seconds = part.partition("=")
        try:
            value = float(seconds)
        except ValueError as exc:
            raise SystemExit(f"HCLOUD_FLOW_DEADLINES: {part!r} is not action=seconds") from exc
        if name.strip() not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise SystemExit(f"HCLOUD_FLOW_DEADLINES: {name.strip()!r} is not an action; known: {known}")
        if not 1 <= value <= 30 * _DAY:  # NaN fails this too
            raise SystemExit(f"HCLOUD_FLOW_DEADLINES: {part!r}: give seconds from 1 to {30 * _DAY:g}")
        out[name.strip()] = value
    return out


def _secret(variable: str, *, empty_file: bool = True) -> str | None:
    try:
        return read_secret(os.environ, variable, empty_file=empty_file) or None
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def redis_urls(url: str, password: str | None) -> tuple[str, str, str | None]:
    """Return the Redis URL to connect with, the same URL without its password, and the password (or None).

    The password comes from the URL or from HCLOUD_FLOW_REDIS_PASSWORD[_FILE] (a compose secret), not both:
    which one wins would be a guess. Only the URL a client connects with carries it.
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("redis", "rediss", "unix") or not sep:
        # The scheme only: the rest of a URL may hold a password.
        raise SystemExit(
            "HCLOUD_FLOW_REDIS_URL must be a redis://, rediss:// or unix:// URL, not one starting "
            f"{url.split(':', 1)[0][:10]!r}"
        )
    netloc = urlsplit(url).netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, own = userinfo.partition(":")
    if own and password:
        raise SystemExit(
            "HCLOUD_FLOW_REDIS_URL has a password and HCLOUD_FLOW_REDIS_PASSWORD[_FILE] is set too; keep one"
        )
    after = rest[len(netloc) :]  # the path (unix: the socket), the database, the query

    def joined(login: str) -> str:
        return f"{scheme}://{login}{hostport}{after}"

    bare = joined(f"{user}@" if user else "")
    if own:
        return url, bare, unquote(own)
    if not password:
        return bare, bare, None
    return joined(f"{user}:{quote(password, safe='')}@"), bare, password


_visibility = _setting("HCLOUD_FLOW_VISIBILITY_TIMEOUT", 600.0)

# The URL with the password sits only under names that Celery masks wherever it shows its settings
# (`celery inspect conf`, Flower, banners: "broker_url", "*backend*"); redbeat gets the URL without it and
# the password under a "password" key (masked too), never a module-level name of its own here.
broker_url, redbeat_redis_url, _password = redis_urls(
    os.environ.get("HCLOUD_FLOW_REDIS_URL", "redis://127.0.0.1:6379/0"),
    _secret("HCLOUD_FLOW_REDIS_PASSWORD", empty_file=False),
)
redbeat_redis_options = {"password": _password} if _password else {}
# Celery takes these from the environment over any setting (`celery --broker URL` sets the first): the
# broker and results would then sit in another Redis than the records the CLI reads, or results lose their
# user-data redaction (a reviewer). The same Redis, as hcloud-flow gives it, is harmless.
_ours = (broker_url, redbeat_redis_url)
for _name, _same in (
    ("CELERY_BROKER_URL", _ours),
    ("CELERY_BROKER_READ_URL", _ours),
    ("CELERY_BROKER_WRITE_URL", _ours),
    ("CELERY_RESULT_BACKEND", ("workers.result_backend:RedisBackend+" + broker_url,)),
):
    if os.environ.get(_name) and os.environ[_name] not in _same:
        raise SystemExit(f"{_name} is set to another value than hcloud-flow's own; unset it (the Redis is "
                         "given as HCLOUD_FLOW_REDIS_URL)")  # fmt: skip
del _password, _name, _same, _ours
# kombu's Redis transport, but a malformed entry on a queue list is moved aside instead of killing the worker.
broker_transport = "workers.broker_transport:Transport"
# Celery's Redis result backend, keeping user data only as a fingerprint (workers/result_backend.py).
result_backend = "workers.result_backend:RedisBackend+" + broker_url
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
task_default_queue = "hcloud_flow"
result_extended = True
task_track_started = True
result_expires = int(_setting("HCLOUD_FLOW_RESULT_EXPIRES", 86400))
broker_connection_retry_on_startup = True

# At-least-once delivery: a task is acknowledged after it ran, and re-queued when its worker dies.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Not worker_cancel_long_running_tasks_on_connection_loss: with the threads pool it crashes the worker
# ("'NoneType' object has no attribute 'hostname'") when Redis drops mid-task. Steps are idempotent, so a
# step that overlaps its own redelivery re-attaches instead of posting twice.
# On a warm shutdown, give running tasks this long, then put the rest back on the queue at once instead of
# leaving them to the visibility timeout.
worker_soft_shutdown_timeout = 30.0
# A redelivered message is one whose worker died: a task must finish well inside the visibility timeout
# or Redis hands it to a second worker while the first still runs it. Action tasks post and park within
# seconds (waiting happens in the monitor), so a hard limit of a third of the timeout is generous.
task_time_limit = max(5, int(_visibility / 3))
task_soft_time_limit = max(4, int(_visibility / 3) - 2)
broker_transport_options = {
    "visibility_timeout": _visibility,
    # Sweep for messages of dead workers every few seconds instead of every 100 s.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _visibility}
worker_hijack_root_logger = False
# Task events feed Flower's task views (they are pub/sub notices, not queued messages).
worker_send_task_events = True

# Schedules (maintenance windows) live in Redis through celery-redbeat; its lock lets one beat of many fire.
# Crontabs are evaluated in UTC; each window keeps its own time zone (workflows/windows.py).
timezone = "UTC"
enable_utc = True
# redbeat's scheduler, made to outlive a Redis outage and to note each tick (workflows/beat.py).
beat_scheduler = "workflows.beat:Scheduler"
beat_max_loop_interval = int(_setting("HCLOUD_FLOW_BEAT_INTERVAL", 30))
# redbeat_redis_url and redbeat_redis_options: with broker_url above.
redbeat_key_prefix = "hf:redbeat:"
# A standby beat takes over this long after the active one died; it must exceed the loop interval.
redbeat_lock_timeout = beat_max_loop_interval * 5

hcloud_flow = {
    "endpoint": os.environ.get("HCLOUD_ENDPOINT", "https://api.hetzner.cloud/v1"),
    "retention": _setting("HCLOUD_FLOW_RETENTION", 7 * 86400),
    "poll_first": _setting("HCLOUD_FLOW_POLL_FIRST", 1.0),
    "poll_cap": _setting("HCLOUD_FLOW_POLL_CAP", 10.0),
    "shutdown_grace": _setting("HCLOUD_FLOW_SHUTDOWN_GRACE", 60.0),
    "deadlines": _deadlines(os.environ.get("HCLOUD_FLOW_DEADLINES", "")),
    "rate_refill": _setting("HCLOUD_FLOW_RATE_REFILL", 0.0),
    "request_timeout": _setting("HCLOUD_FLOW_REQUEST_TIMEOUT", 30.0),
    "retry_base": _setting("HCLOUD_FLOW_RETRY_BASE", 1.0),
    # How recent the project's newest seen action id must be to serve as a step's bound before a POST;
    # older (or 0), and the step reads the server's newest action first (workers/action_ids.py).
    "bound_fresh": _setting("HCLOUD_FLOW_BOUND_FRESH", 5.0),
    # How old a server object a fleet job listed may be to validate one of its later, smaller waves; older,
    # and the job lists the servers it has still to start again (workflows/fleet.py).
    "fleet_fresh": _setting("HCLOUD_FLOW_FLEET_FRESH", 10.0),
    # Seconds between looks at a fleet job's --block-on URLs while one of them holds its new starts back.
    "block_recheck": _setting("HCLOUD_FLOW_BLOCK_RECHECK", 15.0),
    "monitor": _flag("HCLOUD_FLOW_MONITOR", True),
    # Least time between two monitor rounds, cluster-wide: shorter hands off sooner, longer spends fewer
    # requests (rounds run only when a wait is due, and space out by themselves while the budget is scarce).
    "monitor_gap": _setting("HCLOUD_FLOW_MONITOR_GAP", 0.25),
    # Webhooks told of every run, job and window event, besides a submission's own (workflows/notify.py).
    "notify_urls": [u.strip() for u in os.environ.get("HCLOUD_FLOW_NOTIFY_URLS", "").split(",") if u.strip()],
}


def webhook_secret() -> str | None:
    """Return the key webhook bodies are signed with (HCLOUD_FLOW_WEBHOOK_SECRET[_FILE]); not in app.conf."""
    return _secret("HCLOUD_FLOW_WEBHOOK_SECRET")


def projects() -> Projects:
    """Return the projects the workers serve, with their tokens (HCLOUD_TOKEN[_FILE], HCLOUD_FLOW_PROJECTS
    and each project's HCLOUD_TOKEN_<NAME>[_FILE]); kept out of app.conf on purpose."""
    return projects_from(os.environ, default_endpoint=str(hcloud_flow["endpoint"]))


def secret_key() -> str | None:
    """Return the key that seals root passwords (HCLOUD_FLOW_SECRET_KEY[_FILE]), or None."""
    return _secret("HCLOUD_FLOW_SECRET_KEY")

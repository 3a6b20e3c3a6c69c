"""``hcloud-flow health worker`` and ``hcloud-flow health beat``: the containers' healthchecks.

They run every 30 s on every container, so neither asks the Hetzner API (that would spend the project's rate
budget): ``worker`` reads what the API's last answers said of each served project's token, noted in Redis by
the workers' client (``workers/token_health.py``), and pings its own Celery node; ``beat`` reads when a beat
last ticked (``workflows/beat.py``). Each prints one line per finding and exits 0 healthy, 1 not.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import click

from .common import EXIT_FAILED, EXIT_OK, json_option, print_json

__all__ = ["COMMANDS"]

# Seconds a healthcheck waits for Redis: compose gives the whole check 20 s.
_REDIS_TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    """One thing a healthcheck looked at: what, whether it is healthy, and what it saw."""

    check: str
    ok: bool
    detail: str


def _report(findings: list[Finding], as_json: bool) -> int:
    healthy = all(f.ok for f in findings)
    if as_json:
        print_json({"healthy": healthy, "findings": [asdict(f) for f in findings]})
    else:
        for f in findings:
            click.echo(f"{'ok  ' if f.ok else 'FAIL'} {f.check}: {f.detail}")
    return EXIT_OK if healthy else EXIT_FAILED


def _redis(app: Any) -> Any:
    import redis

    return redis.Redis.from_url(
        app.conf.broker_url, socket_connect_timeout=_REDIS_TIMEOUT, socket_timeout=_REDIS_TIMEOUT
    )


def _ago(at: float) -> str:
    return f"{max(0.0, time.time() - at):.0f} s ago"


@click.group("health")
def health_group() -> None:
    """Check this container's worker or beat, without asking the API (the compose healthchecks)."""


@health_group.command("worker")
@click.option(
    "--node",
    default=None,
    help="the worker's Celery node name (default: celery@ and this host's name, as Celery names a worker)",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60.0),
    default=10.0,
    show_default=True,
    help="seconds to wait for the node's answer to a ping",
)
@json_option
def worker_health(node: str | None, timeout: float, as_json: bool) -> int:
    """Fail when a served project has no token, the API refused one with 401, or the node does not answer."""
    import redis
    from kombu.exceptions import OperationalError

    import celeryconfig
    from workers.celery_app import app
    from workers.errors import ConfigError
    from workers.projects import variable_suffix
    from workers.token_health import REJECTED, read_mark

    findings: list[Finding] = []
    try:
        served = celeryconfig.projects()
    except ConfigError as exc:
        return _report([Finding("projects", False, str(exc))], as_json)
    client = _redis(app)
    for name in served.names():
        project = served.get(name)
        check = f"token of project {name}"
        if not project.token:
            variable = "HCLOUD_TOKEN" + ("" if name == "default" else f"_{variable_suffix(name)}")
            findings.append(Finding(check, False, f"none configured (set {variable} or {variable}_FILE)"))
            continue
        try:
            mark = read_mark(client, name, project.token)
        except redis.RedisError as exc:
            findings.append(Finding(check, False, f"cannot read its mark in Redis: {exc}"))
            continue
        if mark is None:
            findings.append(Finding(check, True, "configured; no answer of the API noted yet"))
        elif mark.state == REJECTED:
            findings.append(
                Finding(
                    check,
                    False,
                    f"refused by the API (HTTP {mark.status} to {mark.request}, {_ago(mark.at)}); "
                    "give the workers a valid token and recreate them",
                )
            )
        else:
            findings.append(Finding(check, True, f"accepted by the API ({mark.request}, {_ago(mark.at)})"))
    target = node or f"celery@{socket.gethostname()}"
    try:
        replies = app.control.ping(destination=[target], timeout=timeout) or []
    except (OperationalError, redis.RedisError, OSError) as exc:  # the broker unreachable or refusing us
        findings.append(Finding(f"ping {target}", False, f"{type(exc).__name__}: {exc}"))
    else:
        answered = any(target in reply for reply in replies)
        detail = "answered" if answered else f"no answer within {timeout:g} s"
        findings.append(Finding(f"ping {target}", answered, detail))
    return _report(findings, as_json)


@health_group.command("beat")
@json_option
def beat_health(as_json: bool) -> int:
    """Fail when no beat has ticked lately: then no maintenance window fires."""
    import redis

    from workers.celery_app import app
    from workflows.beat import beat_seen

    interval = float(app.conf.beat_max_loop_interval)
    try:
        seen = beat_seen(_redis(app), interval)
    except redis.RedisError as exc:
        return _report([Finding("beat", False, f"cannot read its tick in Redis: {exc}")], as_json)
    if seen is None:
        finding = Finding(
            "beat",
            False,
            f"no beat has ticked within three of its intervals ({3 * interval:g} s): no window fires",
        )
    else:
        # The tick of the beat holding the schedule lock; a standby (waiting for that lock) is healthy too,
        # since the windows fire.
        finding = Finding("beat", True, f"a beat ticked {_ago(seen)}")
    return _report([finding], as_json)


COMMANDS = (health_group,)

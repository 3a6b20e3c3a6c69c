"""Gates a fleet job passes besides its own rules: alert blocks and health checks.

Health checks (``--health-check``): after a server's run succeeded, the server counts as done only once
its URL answers healthy (2xx, or a TCP connection) without a break for the settle period; past the
deadline it counts as failed. The verdict after each look is a pure function (``health_verdict``).

Alert blocks: a fleet job starts no new server while a URL it was given reports alerts (``--block-on``).

As kured does with Prometheus: any answer but a 2xx, no answer, or an answer listing alerts blocks. What
counts as a list of alerts, by the shape of the JSON answer:

- Alertmanager ``/api/v2/alerts``: a JSON list; each entry is an alert (silenced ones are filtered by the
  query string, e.g. ``?silenced=false&inhibited=false&active=true``).
- Prometheus ``/api/v1/query?query=ALERTS{alertstate="firing"}`` (or any query): ``data.result``; a
  non-empty vector blocks.
- Alertmanager's older ``/api/v1/alerts``: ``data`` as a list; Prometheus' ``/api/v1/alerts``:
  ``data.alerts``.
- Anything else blocks, 2xx or not: an answer we cannot read as a list of alerts (an HTML login page, an
  empty body, one over 1 MiB) is not an all-clear.

The rule is a pure function of the answer (``blocking_reason``); ``first_block`` asks each URL in turn.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import urllib3

__all__ = [
    "HEALTH_EVERY",
    "MAX_BODY",
    "PROBE_TIMEOUT",
    "TOO_BIG",
    "Probe",
    "blocking_reason",
    "check_template",
    "first_block",
    "health_url",
    "health_verdict",
    "http_probe",
    "looks_needed",
    "probe_health",
]

PROBE_TIMEOUT = 5.0  # seconds for one look at a block URL; no answer in time blocks
MAX_BODY = 1 << 20  # bytes of a block URL's answer read at most; a longer one blocks
T = TypeVar("T")
TOO_BIG = "\x00too big"  # what http_probe hands back for an answer over MAX_BODY
UNANSWERED = f"no whole answer within {PROBE_TIMEOUT:g} s"  # why a look not done in time blocks
# What a look at a URL found: the HTTP status (None: no answer, with why in the text) and the body.
Probe = Callable[[str], tuple[int | None, str]]


def http_probe(url: str, clock: Callable[[], float] = time.monotonic) -> tuple[int | None, str]:
    """GET ``url``; return its status and body, or (None, why) without an answer within ``PROBE_TIMEOUT``
    in all. A body over ``MAX_BODY`` is not read: it comes back as ``TOO_BIG``, which blocks (a list cut
    short is unreadable).

    The timeout bounds the whole look, not each read of the socket: an answer trickling a byte a second
    held a look (and the job's lock, and every other look) for minutes (an outside test).
    """
    deadline = clock() + PROBE_TIMEOUT
    try:
        with requests.get(url, timeout=PROBE_TIMEOUT, stream=True, allow_redirects=False) as resp:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_BODY:
                if clock() > deadline:
                    return None, UNANSWERED
                chunk = resp.raw.read1(MAX_BODY + 1 - size, decode_content=True)  # what has come, at once
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_BODY:
                return resp.status_code, TOO_BIG
            return resp.status_code, b"".join(chunks).decode("utf-8", "replace")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        return None, type(exc).__name__


def _alerts(answer: Any) -> list[Any] | None:
    """Return the alerts an answer lists, or None when its shape is not one of alerts."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        data = answer.get("data")
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            for key in ("result", "alerts"):  # a Prometheus query, Prometheus' own /api/v1/alerts
                if isinstance(data.get(key), list):
                    return data[key]
    return None


def _name(alert: Any) -> str | None:
    if not isinstance(alert, dict):
        return None
    labels = alert.get("labels") or alert.get("metric") or {}
    return labels.get("alertname") if isinstance(labels, dict) else None


def blocking_reason(status: int | None, body: str) -> str | None:
    """Return why an answer blocks new starts, or None if it does not."""
    if status is None:
        return f"no answer ({body})"
    if not 200 <= status < 300:
        return f"answered HTTP {status}"
    if body == TOO_BIG:
        return f"answer over {MAX_BODY >> 20} MiB: not read"
    try:
        alerts = _alerts(json.loads(body))
    except ValueError:
        alerts = None
    if alerts is None:
        # An answer we cannot read as alerts (an HTML login page, an empty body) is not an all-clear.
        return f"answer is not a list of alerts (HTTP {status}, {len(body)} bytes)"
    if not alerts:
        return None
    names = sorted({n for n in map(_name, alerts) if n})
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    # Prometheus lists pending alerts too (state "pending"): they block as well, but are not called firing.
    pending = any(isinstance(a, dict) and a.get("state") == "pending" for a in alerts)
    said = "listed, some still pending" if pending else "firing"
    return f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} {said}" + (f" ({shown})" if shown else "")


def look_all(look: Callable[[str], T], urls: list[str], limit: float = PROBE_TIMEOUT + 1.0) -> list[T | None]:
    """Run ``look`` on every URL at once; return the answers, None for a look not done within ``limit``.

    A look's own timeout bounds each socket read, not the look: a peer sending its headers a byte at a
    time held one for as long as it liked (a reviewer). Looks still going are left to end by themselves.
    """
    if not urls:
        return []
    pool = cf.ThreadPoolExecutor(max_workers=min(16, len(urls)))
    try:
        futures = [pool.submit(look, url) for url in urls]
        cf.wait(futures, timeout=limit)
        return [f.result() if f.done() and f.exception() is None else None for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def first_block(urls: list[str], probe: Probe = http_probe) -> str | None:
    """Return why the first blocking URL blocks (naming the URL's host, not its query), or None.

    The URLs are looked at together: one after the other, ten slow ones took 50 s, past the job's lock.
    """
    from urllib.parse import urlsplit

    for url, answer in zip(urls, look_all(probe, urls), strict=True):
        reason = blocking_reason(*(answer or (None, UNANSWERED)))
        if reason is not None:
            return f"blocked by {urlsplit(url).netloc}: {reason}"
    return None


# ----- health checks -----------------------------------------------------------------------------------

HEALTH_EVERY = 2.0  # seconds between two looks at a server's health while it is being checked
_PLACES = ("ipv4", "name", "id")  # what a health-check template may name of its server


def check_template(template: Any) -> str:
    """Return a health-check template fit to keep, or refuse: http(s)://… or tcp://HOST:PORT, with only
    ``{ipv4}``, ``{name}`` and ``{id}`` filled in per server."""
    from string import Formatter
    from urllib.parse import urlsplit

    from workers.errors import BadInput

    from .notify import url_problem

    if not isinstance(template, str) or not template.isprintable() or not 0 < len(template) <= 2048:
        raise BadInput(
            "health_check must be a URL template of at most 2048 printable characters", "health_check"
        )
    try:
        fields = [
            (name, spec, conv) for _, name, spec, conv in Formatter().parse(template) if name is not None
        ]
    except ValueError as exc:
        raise BadInput(
            f"health_check {template[:80]!r} is not a valid template: {exc}", "health_check"
        ) from None
    unknown = sorted({name for name, _, _ in fields} - set(_PLACES))
    if unknown:
        raise BadInput(
            f"health_check may name {{ipv4}}, {{name}} and {{id}}, not {{{unknown[0]}}}", "health_check"
        )
    if any(spec or conv for _, spec, conv in fields):
        raise BadInput(
            "health_check takes {ipv4}, {name} and {id} as they are, without :spec or !r", "health_check"
        )
    # Filled in as a real server would fill it (ids run to eight digits and more, names to 63 characters).
    sample = urlsplit(template.format(ipv4="192.0.2.1", name="s" * 63, id=123456789))
    if sample.scheme not in ("http", "https", "tcp") or not sample.hostname:
        raise BadInput(
            "health_check must look like http://{ipv4}:8080/healthz or tcp://{ipv4}:22", "health_check"
        )
    problem = url_problem(sample)
    if problem is not None:
        raise BadInput(f"health_check {problem} (with a server's values filled in)", "health_check")
    if sample.scheme == "tcp" and sample.port is None:
        raise BadInput("a tcp:// health check needs a port, e.g. tcp://{ipv4}:22", "health_check")
    return template


def health_url(template: str, server: dict[str, Any]) -> str:
    """Return the health-check URL of one server."""
    return template.format(ipv4=server.get("ipv4") or "", name=server.get("name") or "", id=server["id"])


def probe_health(url: str) -> tuple[bool, str]:
    """Look once: an http(s) URL is healthy when it answers 2xx, a tcp:// one when it takes a connection."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=PROBE_TIMEOUT):
                return True, "connected"
        except OSError as exc:
            return False, f"no connection ({type(exc).__name__})"
    try:
        # The status alone: the body is not read (one trickling it held every server's look for minutes).
        with requests.get(url, timeout=PROBE_TIMEOUT, stream=True, allow_redirects=False) as resp:
            status = resp.status_code
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        return False, f"no answer ({type(exc).__name__})"
    return 200 <= status < 300, f"HTTP {status}"


def looks_needed(settle: float) -> int:
    """Return how many healthy looks in a row a settle period needs: one per ``HEALTH_EVERY`` seconds of
    it and one more (at least two), so that looks delayed by a slow probe cannot pass a flapping server on
    two looks far apart."""
    return 1 if settle <= 0 else max(2, math.ceil(settle / HEALTH_EVERY) + 1)


def health_verdict(
    check: dict[str, Any], healthy: bool, detail: str, now: float, settle: float
) -> dict[str, Any]:
    """Return a server's health check after one look taken at ``now``: ``state`` stays "checking" until the
    server has been healthy for ``settle`` seconds and ``looks_needed`` looks in a row ("healthy"), or its
    deadline passes first ("unhealthy"). A failed look starts the settle period over."""
    since = check.get("healthy_since")
    since = (since if since is not None else now) if healthy else None
    streak = int(check.get("streak", 0)) + 1 if healthy else 0
    out = {
        **check,
        "healthy_since": since,
        "streak": streak,
        "last": detail,
        "looks": int(check.get("looks", 0)) + 1,
    }
    if since is not None and now - since >= settle and streak >= looks_needed(settle):
        return {**out, "state": "healthy"}
    if now >= check["deadline"]:
        return {**out, "state": "unhealthy"}
    return {**out, "state": "checking", "next": now + HEALTH_EVERY}

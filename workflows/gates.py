"""Alert blocks: a fleet job starts no new server while a URL it was given reports alerts (``--block-on``).

As kured does with Prometheus: any answer but a 2xx, no answer, or an answer listing alerts blocks. What
counts as a list of alerts, by the shape of the JSON answer:

- Alertmanager ``/api/v2/alerts``: a JSON list; each entry is an alert (silenced ones are filtered by the
  query string, e.g. ``?silenced=false&inhibited=false&active=true``).
- Prometheus ``/api/v1/query?query=ALERTS{alertstate="firing"}`` (or any query): ``data.result``; a
  non-empty vector blocks.
- Alertmanager's older ``/api/v1/alerts``: ``data`` as a list.
- Anything else that is a 2xx: not blocking (a health endpoint answering ``ok``).

The rule is a pure function of the answer (``blocking_reason``); ``first_block`` asks each URL in turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

__all__ = ["PROBE_TIMEOUT", "Probe", "blocking_reason", "first_block", "http_probe"]

PROBE_TIMEOUT = 5.0  # seconds for one look at a block URL; no answer in time blocks
# What a look at a URL found: the HTTP status (None: no answer, with why in the text) and the body.
Probe = Callable[[str], tuple[int | None, str]]


def http_probe(url: str) -> tuple[int | None, str]:
    """GET ``url``; return its status and at most 1 MiB of its body, or (None, why) without an answer."""
    try:
        with requests.get(url, timeout=PROBE_TIMEOUT, stream=True, allow_redirects=False) as resp:
            body = resp.raw.read(1 << 20, decode_content=True) or b""
            return resp.status_code, body.decode("utf-8", "replace")
    except requests.RequestException as exc:
        return None, type(exc).__name__


def _alerts(answer: Any) -> list[Any] | None:
    """Return the alerts an answer lists, or None when its shape is not one of alerts."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        data = answer.get("data")
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and isinstance(data.get("result"), list):
            return data["result"]
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
    try:
        alerts = _alerts(json.loads(body))
    except ValueError:
        return None  # a 2xx that is not JSON: a plain health endpoint
    if not alerts:
        return None
    names = sorted({n for n in map(_name, alerts) if n})
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} firing" + (f" ({shown})" if shown else "")


def first_block(urls: list[str], probe: Probe = http_probe) -> str | None:
    """Return why the first blocking URL blocks (naming the URL's host, not its query), or None."""
    from urllib.parse import urlsplit

    for url in urls:
        reason = blocking_reason(*probe(url))
        if reason is not None:
            return f"blocked by {urlsplit(url).netloc}: {reason}"
    return None

"""Webhook notifications: what happened, told to the URLs a run, job or window names and to the global ones.

Events (``event`` in the body): ``run.started``, ``run.ended``, ``job.started``, ``job.awaiting_approval``,
``job.threshold_reached``, ``job.ended``, ``window.fired``, ``window.skipped``, ``window.overran``. Each is
delivered by its own ``hcloud_flow.notify`` task, so a slow or failing receiver holds no step back; a delivery
is tried at most ``ATTEMPTS`` times with growing pauses, and every attempt is logged (``hf:notify:EVENT_ID``,
kept as long as run records).

The body is JSON; a URL written ``slack+https://…`` gets Slack's ``{"text": …}`` instead. With
``HCLOUD_FLOW_WEBHOOK_SECRET`` set, each request carries ``X-Hcloud-Flow-Signature: sha256=<hex HMAC-SHA256
of the raw body>``. Bodies are built from an allow-list of fields: never a token, a password or a sealed
password, whatever a record holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit, urlunsplit

from workers.errors import BadInput

__all__ = [
    "ATTEMPTS",
    "EVENTS",
    "Notifier",
    "check_urls",
    "deliver",
    "event_body",
    "render",
    "signature",
    "target_of",
]

EVENTS = (
    "run.started",
    "run.ended",
    "job.started",
    "job.awaiting_approval",
    "job.threshold_reached",
    "job.ended",
    "window.fired",
    "window.skipped",
    "window.overran",
)
ATTEMPTS = 5
MAX_URLS = 10
_SLACK = "slack+"


# Query keys that carry a credential: a URL holding one would be stored in plain text in the record that
# names it (a run, job or window), and shown to every viewer of it.
_SECRET_KEY = re.compile(
    r"(token|secret|pass|pwd|api[-_]?key|apikey|privatekey|auth|session|signature|access[-_]?key|bearer|"
    r"credential|jwt"
    # Short words only as a whole word, "_" and "-" counting as separators (`client_key`: an outside test),
    # or as the capitalised word of a camelCase name (`clientKey`, `signingKey`: a reviewer).
    r"|(?<![a-z0-9])(key|sig|pw)(?![a-z0-9])|(?-i:(?<=[a-z0-9])(Key|Sig|Pw)(?![a-z])))",
    re.I,
)


def _parameter_names(parts: SplitResult) -> set[str]:
    """Every parameter name of a URL: its query's, split on ``&`` and on ``;`` (some servers still take
    ``;``), and its path segments' ``;name=value`` parameters."""
    names = {unquote_plus(p.partition("=")[0]) for p in re.split("[&;]", parts.query)}
    for segment in parts.path.split("/"):
        # Decoded first: an encoded ";" (%3B) hid `;token=` from the split (an outside test).
        names |= {p.partition("=")[0] for p in unquote(segment).split(";")[1:]}
    return names


def url_problem(parts: SplitResult) -> str | None:
    """Return what makes a URL unfit to keep (without repeating any secret in it), or None."""
    if any(c.isspace() or not c.isprintable() for c in urlunsplit(parts)):
        return "has spaces or control characters; encode them (%20)"
    if parts.username or parts.password:
        return "carries credentials (user:password@), which would be stored in plain text"
    names = _parameter_names(parts)
    if any(not k.isprintable() for k in names):
        # `tok%00en` is read as `token` by some servers, and no pattern sees through it.
        return "has a parameter name with control characters once decoded"
    secrets = sorted(k[:40] for k in names if _SECRET_KEY.search(k))
    if secrets:
        named = ", ".join(secrets)
        return f"carries a credential in a parameter ({named}), which would be stored in plain text"
    if parts.fragment:
        # Never sent over HTTP, so a webhook needs none; and one may hold a token (#access_token=…).
        return "has a #fragment, which a webhook never sends and which would be stored in plain text"
    try:
        port = parts.port  # raises for a port above 65535
    except ValueError:
        port = 0
    if port == 0:  # `:0` comes back as 0, without a word
        return "has a port out of 1-65535"
    return None


def check_urls(urls: Any, field: str = "notify", *, slack: bool = True) -> list[str]:
    """Return URLs fit to keep, or refuse: http(s) (or slack+https when ``slack``), a host, no credentials,
    at most 2048 characters, at most ``MAX_URLS``."""
    if urls is None:
        return []
    if isinstance(urls, str) or not isinstance(urls, list):
        raise BadInput(f"{field} must be a list of URLs", field)
    if len(urls) > MAX_URLS:
        raise BadInput(f"{field}: at most {MAX_URLS} URLs, not {len(urls)}", field)
    out = []
    for url in urls:
        if not isinstance(url, str) or not url.isprintable() or len(url) > 2048 or url != url.strip():
            # (urlsplit drops the spaces around a URL, so its own check never saw them: a reviewer)
            raise BadInput(
                f"{field}: {str(url)[:80]!r} is not a URL of at most 2048 printable characters, without "
                "spaces around it",
                field,
            )
        parts = urlsplit(url.removeprefix(_SLACK) if slack else url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            hint = " (slack+https://… for Slack)" if slack else ""
            raise BadInput(f"{field}: {url[:80]!r} is not an http(s) URL{hint}", field)
        problem = url_problem(parts)
        if problem is not None:
            shown = f"{parts.scheme}://{parts.hostname}"  # never the rest: it may hold the secret
            raise BadInput(f"{field}: the URL to {shown} {problem}", field)
        out.append(url)
    return out


def target_of(url: str) -> str:
    """A short name for a webhook URL in the delivery log, without the URL (which may be a secret)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# What an event may say of its subject: an allow-list, so a field added to a record later (a sealed password,
# say) never leaks into a webhook by default.
_RUN_FIELDS = ("id", "workflow", "project", "server_id", "server_name", "state", "job_id", "submitted_by",
               "created", "finished", "cancelled_by")  # fmt: skip
_JOB_FIELDS = ("id", "workflow", "project", "state", "reason", "submitted_by", "created", "finished",
               "max_errors")  # fmt: skip


def event_body(event: str, subject: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Return the JSON body of an event about a run, a job or a window firing."""
    body: dict[str, Any] = {"event": event, "id": uuid.uuid4().hex, "at": now or time.time()}
    if event.startswith("run."):
        body["run"] = {k: subject.get(k) for k in _RUN_FIELDS}
        if subject.get("error"):
            body["run"]["error"] = {k: subject["error"].get(k) for k in ("type", "message", "step")}
        if subject.get("left"):
            body["run"]["left"] = {k: subject["left"].get(k) for k in ("status", "why")}
    elif event.startswith("job."):
        body["job"] = {k: subject.get(k) for k in _JOB_FIELDS}
        body["job"]["counts"] = subject.get("counts")
        if subject.get("approval"):  # which gate it waits at and until when
            body["job"]["approval"] = {k: subject["approval"].get(k) for k in ("gate", "since", "deadline")}
        names = {int(s["id"]): s.get("name") for s in subject.get("servers", [])}
        body["job"]["failed"] = [
            {"server": names.get(int(sid), sid), "outcome": e.get("outcome"), "reason": e.get("reason")}
            for sid, e in sorted((subject.get("outcomes") or {}).items(), key=lambda kv: int(kv[0]))
            if e.get("outcome") in ("failed", "refused", "skipped", "not_started", "cancelled")
        ]
    else:
        body["window"] = {
            k: subject.get(k) for k in ("name", "project", "local", "outcome", "reason", "job_id")
        }
    return body


def render(url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """Return where to send an event and the raw bytes to send: JSON, or Slack's text for slack+ URLs."""
    if not url.startswith(_SLACK):
        return url, json.dumps(body, sort_keys=True).encode()
    return url.removeprefix(_SLACK), json.dumps({"text": _text(body)}).encode()


def _text(body: dict[str, Any]) -> str:
    event = body["event"]
    if "run" in body:
        r = body["run"]
        server = r.get("server_name") or r["server_id"]
        line = f"hcloud-flow: run {r['id']} ({r['workflow']} on {server}) {r['state']}"
        if r.get("error"):
            line += f": {r['error'].get('message')}"
        if r.get("left"):
            line += f"; server left {r['left'].get('status')}"
        return line
    if "job" in body:
        j = body["job"]
        line = f"hcloud-flow: fleet job {j['id']} ({j['workflow']}) {j['state']}"
        if j.get("approval"):
            line += f": {j.get('reason')}; `hcloud-flow job approve {j['id']}` or `job reject`"
        failed = j.get("failed") or []
        if failed:
            line += "; " + ", ".join(f"{f['server']} {f['outcome']}" for f in failed[:10])
        return line
    w = body["window"]
    what = w.get("reason") or w.get("job_id") or ""
    return f"hcloud-flow: window {w['name']} {event.split('.')[1]} at {w.get('local')}: {what}"


class Notifier:
    """Turn events into delivery tasks for every URL that wants them."""

    def __init__(self, send: Callable[[dict[str, Any]], None], global_urls: Iterable[str] = ()) -> None:
        self.send = send
        self.global_urls = list(global_urls)

    def emit(self, event: str, subject: dict[str, Any], urls: Iterable[str] | None = ()) -> None:
        targets = list(dict.fromkeys([*self.global_urls, *(urls or [])]))
        if not targets:
            return
        body = event_body(event, subject)
        for url in targets:
            self.send({"url": url, "body": body})


def deliver(task: Any, url: str, body: dict[str, Any], secret: str | None, store: Any) -> dict[str, Any]:
    """POST one event to one URL, log the attempt, and ask the task to try again later if it was not taken.

    ``task`` is the bound Celery task (its retry count and ``retry``); ``store`` the run store, whose Redis
    keeps the delivery log as long as it keeps runs.
    """
    import requests

    dest, raw = render(url, body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "hcloud-flow",
        "X-Hcloud-Flow-Event": str(body.get("event")),
        "X-Hcloud-Flow-Delivery": str(body.get("id")),
    }
    if secret:
        headers["X-Hcloud-Flow-Signature"] = signature(secret, raw)
    attempt = int(task.request.retries) + 1
    status: int | None = None
    error = None
    try:
        status = requests.post(dest, data=raw, headers=headers, timeout=10, allow_redirects=False).status_code
    except requests.RequestException as exc:
        error = type(exc).__name__
    ok = status is not None and 200 <= status < 300
    parts = urlsplit(dest)
    # The URL itself may be a credential (Slack's are): the log names its host and a hash of the whole.
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    entry = {"attempt": attempt, "to": f"{parts.scheme}://{host}", "target": target_of(url),
             "status": status, "error": error, "at": time.time(), "delivered": ok}  # fmt: skip
    key = f"{store.prefix}:notify:{body.get('id')}"
    store.redis.rpush(key, json.dumps(entry))
    store.redis.expire(key, int(store.retention))
    if not ok and attempt < ATTEMPTS:
        raise task.retry(countdown=min(60, 2**attempt))
    return {"delivered": ok, "attempts": attempt, "status": status}

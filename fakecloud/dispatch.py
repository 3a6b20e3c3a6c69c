"""The request pipeline, free of sockets: ``/v1`` and ``/_fakecloud`` in, ``Reply`` out.

``/v1`` order, all under the backend lock: settle due actions → spend a rate token (every request counts,
authenticated or not; empty → 429) → refuse a body the transport could not read (400) → throw the fault die
(502/503/504/429/409 answer *instead of* processing, so they have no side effect) → check the token (401) →
route (404/405) → handler → for an action POST answered 201 only, drop its answer (a ``drop_answer_next``
armed by a test, else the ``drop_answer`` die; the action has started, the transport closes the connection
without a byte) → unless dropped, throw the slow die (the answer, already computed, is held back outside the
lock) → count and log (a dropped answer with its would-be status and ``dropped: true``). Every ``/v1``
answer carries the three ``RateLimit-*`` headers, with ``Reset`` shifted by the clock skew like ``Date``,
and an ``X-Correlation-Id``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from . import control
from .backend import Backend
from .exceptions import (
    Conflict,
    FakeCloudError,
    JsonError,
    NotFound,
    RateLimitExceeded,
    ServerError,
    Timeout,
    Unauthorized,
    Unavailable,
)
from .listing import Request
from .urls import V1_ROUTES, Router

__all__ = ["App", "Reply"]

JSON = "application/json"
BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_FAULT_ERRORS: dict[str, type[FakeCloudError]] = {"503": Unavailable, "504": Timeout, "conflict": Conflict}
_ACTION_PREFIX = "/servers/{id}/actions/"


@dataclass(slots=True)
class Reply:
    """An answer ready to write: status, headers, body bytes, how long to hold it back, or to drop it."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False  # the lost answer: close the connection instead of writing anything


def _json_reply(status: int, payload: Any, headers: list[tuple[str, str]]) -> Reply:
    if status == 204:  # No Content (DELETE): no body, so no Content-Type either
        return Reply(status, headers)
    headers.append(("Content-Type", JSON))
    return Reply(status, headers, json.dumps(payload, separators=(",", ":")).encode())


class App:
    """Dispatches requests for one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.v1 = Router(V1_ROUTES)
        self.control = Router(control.ROUTES, arg_pattern=r"([^/]+)")

    def handle(
        self, method: str, target: str, body: bytes | None, authorization: str | None, host: str
    ) -> Reply:
        """Answer one HTTP request (``target`` is the raw request target, query string included).

        ``body`` is None when the transport could not read it (bad ``Content-Length`` or chunk framing).
        """
        path, _, qs = target.partition("?")
        if path.startswith("/v1/") or path == "/v1":
            return self.handle_v1(method, path[3:], qs, body, authorization, f"http://{host}/v1")
        if path.startswith("/_fakecloud/"):
            return self.handle_control(method, path[len("/_fakecloud") :], qs, body)
        headers = [("X-Correlation-Id", secrets.token_hex(8))]
        return _json_reply(404, NotFound(f"no route for {path}; the API lives under /v1").to_json(), headers)

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.backend.token.encode()
        )

    def handle_v1(
        self, method: str, path: str, qs: str, body: bytes | None, authorization: str | None, base_url: str
    ) -> Reply:
        """Run the ``/v1`` pipeline described in the module docstring."""
        backend = self.backend
        headers = [("X-Correlation-Id", secrets.token_hex(8))]
        server_id = action_id = command = None
        fault: str | None = None
        rate_limited = False
        with backend.lock:
            backend.tick()
            decision = backend.bucket.take()
            headers.extend(decision.headers(backend.skew))
            found = self.v1.resolve(path)
            route = found[0] if found else path
            action_post = method == "POST" and route.startswith(_ACTION_PREFIX)
            if action_post:
                command = route[len(_ACTION_PREFIX) :]
            if found and route.startswith("/servers/{id}"):
                server_id = int(found[2][0])
            reply: Reply | None = None
            try:
                if not decision.allowed:
                    rate_limited = True
                    raise RateLimitExceeded(decision.limit)
                if body is None:
                    raise JsonError("request body could not be read: bad Content-Length or chunk framing")
                fault = backend.dice.request_fault(backend.faults, action_post=action_post)
                if fault == "502":
                    headers.append(("Content-Type", "text/html"))
                    reply = Reply(502, headers, BAD_GATEWAY_HTML)
                elif fault == "429":
                    raise RateLimitExceeded(decision.limit)
                elif fault is not None:
                    raise _FAULT_ERRORS[fault]()
                else:
                    if not self._authorized(authorization):
                        raise Unauthorized("unable to authenticate: send 'Authorization: Bearer <token>'")
                    route, handler, args = self.v1.match(method, path)
                    query = parse_qs(qs, keep_blank_values=True) if qs else {}
                    result = handler(backend, Request(method, path, query, body, args, base_url))
                    if len(result) == 3:
                        headers.extend(result[2])
                    if action_post:
                        action_id = result[1]["action"]["id"]
                    reply = _json_reply(result[0], result[1], headers)
            except FakeCloudError as exc:
                headers.extend(exc.headers())
                reply = _json_reply(exc.status, exc.to_json(), headers)
            except Exception:
                traceback.print_exc()  # a bug in fakecloud, not a simulated fault: make it loud
                reply = _json_reply(500, ServerError().to_json(), headers)
            if action_id is not None and backend.drop_answer():  # only an action POST that started one
                reply.drop = True
                fault = "drop_answer"
            if fault is None and not rate_limited:
                reply.delay = backend.dice.slow_seconds(backend.faults)
            backend.traffic.record(
                time=backend.clock.now(),
                method=method,
                path=path,
                route=route,
                status=reply.status,
                server_id=server_id,
                action_id=action_id,
                command=command,
                rate_limited=rate_limited,
                fault=fault or ("slow" if reply.delay else None),
                dropped=reply.drop,
            )
        return reply

    def handle_control(self, method: str, path: str, qs: str, body: bytes | None) -> Reply:
        """Answer a ``/_fakecloud`` test control: no auth, no rate limit, no faults, not counted."""
        headers = [("X-Correlation-Id", secrets.token_hex(8))]
        with self.backend.lock:
            self.backend.tick()
            try:
                if body is None:
                    raise JsonError("request body could not be read: bad Content-Length or chunk framing")
                _, handler, args = self.control.match(method, path)
                query = parse_qs(qs, keep_blank_values=True) if qs else {}
                status, payload = handler(self.backend, Request(method, path, query, body, args, ""))
            except FakeCloudError as exc:
                headers.extend(exc.headers())
                status, payload = exc.status, exc.to_json()
            except Exception:
                traceback.print_exc()
                status, payload = 500, ServerError().to_json()
        return _json_reply(status, payload, headers)

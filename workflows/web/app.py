"""The web service: the HTTP API under ``/api/v1``, the dashboard at ``/`` and ``/metrics``.

It needs Redis (the broker and the run store), never the API token: submissions go through the workers'
``hcloud_flow.*`` tasks with the same validation and the same messages as the CLI. Every route but
``/api/v1/health`` needs a key (``Authorization: Bearer KEY``; the dashboard's pages also take the session a
login form sets). ``viewer`` keys read; ``operator`` keys also submit, cancel and edit. Each write is
recorded with the key's name (``apikey:NAME``) as who did it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from workers.errors import BadInput, ConfigError, Conflict, HcloudFlowError, NotFound, ServerBusy

from .auth import AuthError
from .errors import ERROR_RESPONSES, ErrorBody, describe_invalid
from .errors import openapi_with_security as _openapi
from .services import Services

__all__ = ["MAX_BODY", "create_app", "error"]

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # a run's user_data is at most 32 KiB; nothing we take is larger than a few of those


def error(status: int, kind: str, message: str, field: str | None = None) -> JSONResponse:
    """The one shape of every refusal: ``{"error": {"type", "message", "field"?}}``."""
    body: dict[str, Any] = {"error": {"type": kind, "message": message}}
    if field:
        body["error"]["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _json_refusal(body: bytes) -> JSONResponse | None:
    """Refuse a JSON body that names a key twice in one object (json keeps the last: a repeated "workflow"
    once ran a power-off the caller may not have meant) or nests too deeply to read; leave any other body,
    JSON or not, to the app, which says what is wrong with it."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not repeated:
                repeated.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except UnicodeDecodeError:
        # Every body we take is JSON, which is UTF-8 text (FastAPI's own answer had another shape).
        return error(400, "BadInput", "the body is not UTF-8 text; send JSON")
    except ValueError:
        return None
    except RecursionError:
        return error(400, "BadInput", "the body is JSON nested too deeply to read")
    if repeated:
        return error(
            400,
            "BadInput",
            f"the body names {repeated[0][:80]!r} twice; send each key once",
            repeated[0][:80],
        )
    return None


def _body_limit(app: Any) -> Any:
    """An ASGI wrapper that reads a request's body before the app does and refuses one over MAX_BODY with
    413, whether it came with a Content-Length or chunked (the app then gets the body in one piece)."""

    async def guarded(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        too_large = error(413, "TooLarge", f"the request body is over {MAX_BODY} bytes")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            await too_large(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await too_large(scope, receive, send)
                return
            more = message.get("more_body", False)
        # The login form is the one body that is not JSON: it says itself what is wrong with it.
        refusal = _json_refusal(body) if body and scope.get("path") != "/login" else None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, when it comes

        await app(scope, replay, send)

    return guarded


def create_app(services: Services) -> Any:
    """Build the ASGI application over ``services`` (Redis, the workers' tasks, the key file)."""
    from . import api_routes, dashboard, metrics

    app = FastAPI(
        title="hcloud-flow",
        version="1",
        summary="Hetzner Cloud server actions as durable workflows: runs, fleet jobs, maintenance windows.",
        openapi_url="/openapi.json",
        # No /docs: FastAPI's page loads its script from a CDN onto this origin. /openapi.json is the
        # document (public: it holds no data); any OpenAPI viewer reads it.
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # a redirect would echo the Host header back, and before authentication
        responses={
            code: {"model": ErrorBody, "description": about} for code, about in ERROR_RESPONSES.items()
        },
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.state.services = services

    def is_page(request: Request) -> bool:
        """A person's page (not the API's JSON, nor the fragments a page fetches)."""
        path = request.url.path
        return path == "/" or (path.startswith("/ui/") and not path.startswith("/ui/fragment/"))

    def page_refusal(status: int, message: str) -> Any:
        """A refusal a person reads: a short page with the message and the way back, not JSON."""
        from html import escape

        from fastapi.responses import HTMLResponse

        text = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>hcloud-flow: {status}</title></head>"
            f"<body><h1>{status}</h1><p>{escape(message)}</p><p><a href='/'>back to the overview</a></p>"
            "</body></html>"
        )
        return HTMLResponse(text, status_code=status)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        page = is_page(request)
        if exc.status == 401 and page:  # a person at a page: the login form (scripts and fragments: 401)
            from fastapi.responses import RedirectResponse

            return RedirectResponse("/login", status_code=303)  # type: ignore[return-value]
        return error(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", exc.message)

    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Routing's own refusals (no such path, a method a path does not take) in the one error shape.
        message = "no such path; /openapi.json lists them" if exc.status_code == 404 else str(exc.detail)
        return error(exc.status_code, "NotFound" if exc.status_code == 404 else "HTTPError", message)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        if is_page(request):
            return page_refusal(404, exc.message)
        return error(404, "NotFound", exc.message, exc.field)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        from .idempotency import InProgress, KeyReused

        status = 409 if isinstance(exc, InProgress | Conflict) else 422 if isinstance(exc, KeyReused) else 400
        if is_page(request):
            return page_refusal(status, exc.message)
        return error(status, type(exc).__name__, exc.message, exc.field)

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, exc: ServerBusy) -> JSONResponse:
        message = (
            f"server {exc.server_id} is busy with run {exc.run_id}; wait for it, or submit with "
            '"queue": true to run after it'
        )
        return error(409, "ServerBusy", message, "server")

    @app.exception_handler(ConfigError)
    async def misconfigured(request: Request, exc: ConfigError) -> JSONResponse:
        log.error("web: %s", exc)  # the details (a file's path, say) are for the operator's log
        return error(503, "Misconfigured", "the web service is misconfigured; its log says how")

    @app.exception_handler(HcloudFlowError)
    async def unavailable(request: Request, exc: HcloudFlowError) -> JSONResponse:
        # No worker took the request, or Redis is away: nothing was started (the message says so).
        return error(503, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, field = describe_invalid(exc.errors())
        return error(status, "BadInput", message, field)

    import redis as redis_lib

    async def no_redis(request: Request, exc: Exception) -> JSONResponse:
        message = f"cannot reach Redis ({exc}); check HCLOUD_FLOW_REDIS_URL"
        if is_page(request):
            return page_refusal(503, message)
        return error(503, "Unreachable", message)

    # A Redis that accepts connections but does not answer (hung, overloaded) raises a timeout, which is
    # not a ConnectionError: it was a plain-text 500 with a traceback, on the health probe too.
    app.add_exception_handler(redis_lib.ConnectionError, no_redis)
    app.add_exception_handler(redis_lib.TimeoutError, no_redis)

    app.include_router(api_routes.router)
    app.include_router(api_routes.probes)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)

    @app.middleware("http")
    async def no_store(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return _body_limit(app)

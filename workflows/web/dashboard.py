"""The dashboard: server-rendered pages of runs, fleet jobs, windows, the API budget and the workers' health.

Each page's live part is a fragment of its own (``/ui/fragment/...``) that a dozen lines of script fetch
again every two seconds and swap in: no framework, and the page reads fully without script (a reload).
Pages take the viewer session the login form opens, or a Bearer key. Everything shown is escaped (Jinja2's
autoescape), labels and names included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from workers.run_store import has_ended

from .api_routes import ident, redact
from .auth import SESSION_COOKIE, SESSION_TTL, Viewer
from .keys import digest
from .services import Services
from .state import budgets

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _clock(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts))) if ts else "-"


def _ago(ts: Any) -> str:
    if not ts:
        return "-"
    seconds = max(0, int(time.time() - float(ts)))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else _clock(ts)


_TEMPLATES.filters["clock"] = _clock
_TEMPLATES.filters["ago"] = _ago


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_TEMPLATES.get_template(name).render(**context))


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _page(
    request: Request, key: Any, fragment: str, title: str, refresh: str, **context: Any
) -> HTMLResponse:
    if request.url.path.startswith("/ui/fragment/"):
        return _render(fragment, **context)
    return _render("page.html", fragment=fragment, title=title, refresh=refresh, who=key, **context)


# -- login --------------------------------------------------------------------------------------------------


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """None: said plainly, so that browsers stop logging a 404 on every page."""
    return Response(status_code=204)


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return _render("login.html", error=None)


def _cross_site(request: Request) -> bool:
    """Tell whether a form came from another site's page (its Origin is not ours): such a login would sign
    a person in with someone else's key, and such a logout would sign them out."""
    site = request.headers.get("sec-fetch-site")  # what a browser says of it, when it says
    if site is not None:
        return site not in ("same-origin", "none")  # "same-site" is another host of the same domain
    # Our pages send no referrer, so a browser may send "Origin: null" for our own form.
    origin = request.headers.get("origin")
    return origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host")


@router.post("/login")
async def login(request: Request) -> Response:
    if _cross_site(request):
        page = _render("login.html", error="A login from another site's page is refused.")
        page.status_code = 403
        return page
    raw = await request.body()
    form = parse_qs(raw.decode("utf-8", "replace")[:4096])
    given = (form.get("key") or [""])[0].strip()
    key = _services(request).keys.check(given)
    if key is None:
        page = _render("login.html", error="That key is not valid.")
        page.status_code = 401
        return page
    sid = _services(request).sessions.open(key, digest(given))
    response = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE, sid, max_age=SESSION_TTL, httponly=True, samesite="strict", secure=secure
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if _cross_site(request):
        return RedirectResponse("/", status_code=303)  # nothing ended
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        _services(request).sessions.close(sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- pages --------------------------------------------------------------------------------------------------


# The most active runs the overview lists (the API pages through all of them).
ACTIVE_SHOWN = 200


def _overview(services: Services) -> dict[str, Any]:
    from .api_routes import _window_view

    runs = services.runs.list(limit=40)
    # Read on their own: more than 40 newer runs hid a run still going (a failed run still powering its
    # server on is active too).
    active = [r for r in services.runs.list(active=True, limit=ACTIVE_SHOWN) if not has_ended(r)]
    windows = [
        _window_view(services, w) for w in (services.windows.get(n) for n in services.windows.names()) if w
    ]
    for w in windows:
        last = services.windows.history(w["name"], 1)
        w["last"] = last[0] if last else None
    return {
        "active": active,
        "recent": [r for r in runs if has_ended(r)][:20],
        "jobs": services.jobs.list(10),
        "windows": windows,
        "budgets": budgets(services.redis, services.clock(), services.refill),
        "live": services.liveness.read(),
        "now": services.clock(),
    }


@router.get("/")
@router.get("/ui/fragment/overview")
def overview(request: Request, key: Viewer) -> HTMLResponse:
    return _page(
        request, key, "overview.html", "hcloud-flow", "/ui/fragment/overview", **_overview(_services(request))
    )


@router.get("/ui/runs/{run_id}")
@router.get("/ui/fragment/runs/{run_id}")
def run_page(run_id: str, request: Request, key: Viewer) -> HTMLResponse:
    run = redact(_services(request).runs.status(ident(run_id, "run_id")))
    return _page(request, key, "run.html", f"run {run['id']}", f"/ui/fragment/runs/{run['id']}", run=run)


@router.get("/ui/jobs/{job_id}")
@router.get("/ui/fragment/jobs/{job_id}")
def job_page(job_id: str, request: Request, key: Viewer) -> HTMLResponse:
    job = redact(_services(request).jobs.status(ident(job_id, "job_id")))
    names = {int(s["id"]): s.get("name") or s["id"] for s in job["servers"]}
    cells = [
        {"id": sid, "name": names.get(sid, sid), **job["outcomes"].get(sid, {"outcome": "pending"})}
        for sid in (int(s["id"]) for s in job["servers"])
    ]
    for c in cells:
        check = c.get("health") or {}
        if check.get("state") == "checking":  # its run succeeded; the server is not done yet
            c["reason"] = f"health check: {check.get('last') or 'first look due'}"
    errors = sum(1 for c in cells if c["outcome"] in ("failed", "refused"))
    return _page(
        request,
        key,
        "job.html",
        f"job {job['id']}",
        f"/ui/fragment/jobs/{job['id']}",
        job=job,
        cells=cells,
        errors=errors,
    )


@router.get("/ui/windows/{name}")
@router.get("/ui/fragment/windows/{name}")
def window_page(name: str, request: Request, key: Viewer) -> HTMLResponse:
    from .api_routes import _window, _window_view

    services = _services(request)
    window = _window_view(services, _window(services, name))
    history = services.windows.history(name, 50)
    return _page(
        request,
        key,
        "window.html",
        f"window {name}",
        f"/ui/fragment/windows/{name}",
        window=window,
        history=history,
    )

"""The API refuses a request that says more than its route reads: an unknown or repeated query parameter,
or a body sent to a route that takes none.

FastAPI drops both without a word. A misspelt ``?dryrun=true`` started a real fleet job instead of planning
it, ``?dry_run=true&dry_run=false`` ran it (the last value won), and ``{"approve": false}`` sent to
``/approve`` approved the job (an outside test).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from workers.errors import BadInput

__all__ = ["strict_request"]


def _dependants(dependant: Any) -> Iterator[Any]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _reads(route: Any) -> tuple[frozenset[str], bool]:
    """Return the query parameters a route reads (its dependencies' too), and whether it reads a body."""
    every = list(_dependants(route.dependant))
    return frozenset(p.alias for d in every for p in d.query_params), any(d.body_params for d in every)


async def strict_request(request: Request) -> None:
    """A dependency of every API route (see the module's docstring)."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known, takes_body = _reads(route)
    given = request.query_params
    for name in given:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise BadInput(f"unknown query parameter {name[:80]!r}; this path takes: {takes}", name[:80])
        # Every parameter we read is one value: given twice, which one was meant cannot be told.
        if len(given.getlist(name)) > 1:
            raise BadInput(f"query parameter {name!r} given twice; give it once", name)
    if not takes_body and not _says_nothing(await request.body()):
        raise BadInput(f"{request.method} {request.url.path} takes no body; send none", "body")


def _says_nothing(body: bytes) -> bool:
    """An empty body, or JSON ``{}`` or ``null``: what many clients send with every POST
    (``requests.post(url, json={})``), and no instruction."""
    if not body.strip():
        return True
    try:
        return json.loads(body) in ({}, None)
    except ValueError:
        return False

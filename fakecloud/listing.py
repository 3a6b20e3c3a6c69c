"""Query-string parsing shared by the list endpoints: filters, ``sort``, ``page``/``per_page``, ``meta``.

SPEC Pagination: ``page`` starts at 1, ``per_page`` defaults to 25 and is at most 50; list answers carry
``meta.pagination`` and a ``Link`` header with ``prev``/``next``/``last``. SPEC Sorting: ``sort=field`` or
``field:asc|desc``, repeatable, earlier keys first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from .exceptions import InvalidInput

__all__ = [
    "Request",
    "Sort",
    "flag",
    "ints",
    "is_uint",
    "many",
    "one",
    "paginate",
    "parse_sort",
    "sort_items",
]

T = TypeVar("T")
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 50


@dataclass(slots=True)
class Request:
    """What a handler sees of one HTTP request."""

    method: str
    path: str  # below /v1, without the query string
    query: dict[str, list[str]]
    body: bytes
    args: tuple[str, ...]  # the route's {placeholders}, in order
    base_url: str  # e.g. http://127.0.0.1:8080/v1, for Link headers


def is_uint(text: str) -> bool:
    """Return whether ``text`` is an unsigned decimal integer of ASCII digits, at most 32 of them."""
    # str.isdigit alone admits "²" (int() refuses it: a 500) and "٣" (int() takes it: the API would not).
    # An int64 has 19 digits; the cap keeps int() away from its 4300-digit limit (another 500).
    return len(text) <= 32 and text.isascii() and text.isdigit()


def one(query: dict[str, list[str]], name: str) -> str | None:
    """Return the first non-empty value of ``name``, or None."""
    for value in query.get(name, ()):
        if value != "":
            return value
    return None


def many(query: dict[str, list[str]], name: str, allowed: frozenset[str] | None = None) -> set[str]:
    """Return every value of a repeatable key (``?status=a&status=b``), checked against ``allowed``."""
    values = {v for v in query.get(name, ()) if v != ""}
    if allowed is not None:
        bad = sorted(values - allowed)
        if bad:
            raise InvalidInput.field(name, f"invalid value {bad[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return values


def ints(query: dict[str, list[str]], name: str) -> list[int]:
    """Return every value of ``name`` as a positive int, in order."""
    out = []
    for value in query.get(name, ()):
        if not is_uint(value) or int(value) < 1:
            raise InvalidInput.field(name, f"invalid ID {value!r}: must be a positive integer")
        out.append(int(value))
    return out


def flag(query: dict[str, list[str]], name: str) -> bool | None:
    """Return a boolean query value (``true``/``false``), or None when absent."""
    value = one(query, name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise InvalidInput.field(name, f"invalid boolean {value!r}: use true or false")
    return value.lower() == "true"


Sort = list[tuple[str, bool]]  # (field, descending)


def parse_sort(query: dict[str, list[str]], allowed: Sequence[str]) -> Sort:
    """Parse repeated ``sort=field[:asc|:desc]`` values."""
    sorts: Sort = []
    for value in query.get("sort", ()):
        field, _, direction = value.partition(":")
        if field not in allowed or direction not in ("", "asc", "desc"):
            choices = ", ".join(f"{f}, {f}:asc, {f}:desc" for f in allowed)
            raise InvalidInput.field("sort", f"invalid sort {value!r}; allowed: {choices}")
        sorts.append((field, direction == "desc"))
    return sorts


def sort_items(items: list[T], sorts: Sort, keys: dict[str, Callable[[T], Any]]) -> list[T]:
    """Sort by several keys; ``None`` sorts before any value, as an unset field would."""
    for field, descending in reversed(sorts):
        key = keys[field]

        def none_first(item: T, key: Callable[[T], Any] = key) -> tuple[bool, Any]:
            value = key(item)
            return (value is not None, value)

        items = sorted(items, key=none_first, reverse=descending)
    return items


def _page_number(query: dict[str, list[str]], name: str, default: int) -> int:
    value = one(query, name)
    if value is None:
        return default
    if not is_uint(value) or int(value) < 1:
        raise InvalidInput.field(name, f"invalid {name} {value!r}: must be an integer >= 1")
    return int(value)


def paginate(
    items: list[T], request: Request, *, max_per_page: int = MAX_PER_PAGE
) -> tuple[list[T], dict[str, Any], list[tuple[str, str]]]:
    """Cut one page; return it, the ``meta`` object and the ``Link`` header (if any)."""
    page = _page_number(request.query, "page", 1)
    # Inference: a per_page above the maximum is clamped rather than refused.
    per_page = min(_page_number(request.query, "per_page", DEFAULT_PER_PAGE), max_per_page)
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    previous_page = page - 1 if 1 < page <= last + 1 else None
    next_page = page + 1 if page < last else None
    meta = {
        "pagination": {
            "page": page,
            "per_page": per_page,
            "previous_page": previous_page,
            "next_page": next_page,
            "last_page": last,
            "total_entries": total,
        }
    }
    links = []
    for rel, target in (("prev", previous_page), ("next", next_page), ("last", last)):
        if target is not None and (rel != "last" or last > 1):
            query = {k: v for k, v in request.query.items() if k != "page"}
            query["page"] = [str(target)]
            url = f"{request.base_url}{request.path}?{urlencode(query, doseq=True)}"
            links.append(f'<{url}>; rel="{rel}"')
    headers = [("Link", ", ".join(links))] if links else []
    return chunk, meta, headers

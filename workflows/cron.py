"""Calendar rules of maintenance windows, as pure functions: cron expressions, durations, time zones.

Standard five-field cron (minute hour day-of-month month day-of-week) in the window's own IANA zone, read as
Vixie cron and cronie read it: the two day fields are OR-ed when both are restricted, and a day field written
from ``*`` (``*/2``) counts as unrestricted, so that the other one is AND-ed with it. ``next_firing`` and
``cron_can_fire`` answer what an operator asks of a schedule before it fires; ``utc_minutes`` is what redbeat
(which knows only UTC) is given.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from workers.errors import BadInput

__all__ = [
    "MAX_DURATION",
    "WINDOW_NAME",
    "Cron",
    "cron_can_fire",
    "cron_matches",
    "exists",
    "next_firing",
    "parse_cron",
    "parse_duration",
    "unwrapped",
    "utc_minutes",
    "zone",
]

WINDOW_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_UNITS = {"h": 3600, "m": 60, "s": 1, "d": 86400}


def parse_duration(text: Any, name: str) -> int:
    """Parse ``2h``, ``30m``, ``1h30m``, ``90s`` or plain seconds into seconds."""
    if text is None:
        raise BadInput(f"{name} is missing; give it like 7d, 2h, 30m, 1h30m or 90s (--{name})", name)
    raw = str(text).strip().lower()
    if raw.isascii() and raw.isdigit():
        return int(raw)
    # ASCII digits only: Arabic-Indic "30d" is not 30 days to a reader of the window's record.
    parts = re.fullmatch(r"(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?", raw)
    if not raw or parts is None:
        raise BadInput(f"{name} must look like 7d, 2h, 30m, 1h30m or 90s, not {text!r}"[:300], name)
    return sum(
        int(parts.group(i)) * _UNITS[u] for i, u in ((2, "d"), (4, "h"), (6, "m"), (8, "s")) if parts.group(i)
    )


def _field_grammar(names: str | None) -> re.Pattern[str]:
    """Return the whole-field pattern of a cron field: values (numbers, or ``names``), ``*``, ranges, lists
    and steps; nothing else (Celery's parser read ``SUN#2`` as ``SUN`` and dropped the rest)."""
    value = "[0-9]+" if names is None else f"(?:[0-9]+|{names})"
    item = rf"(?:(?:\*|{value}-{value})(?:/[0-9]+)?|{value})"
    return re.compile(rf"{item}(?:,{item})*", re.IGNORECASE)


@dataclass(frozen=True)
class _Field:
    """One of the five cron fields: its name, its values (``low`` to ``low + size - 1``), how it is written,
    and what to say of its values when it is written wrong."""

    label: str
    size: int
    low: int
    grammar: re.Pattern[str]
    values: str
    range_note: str = ""


_FIELDS = (
    _Field("minute", 60, 0, _field_grammar(None), "numbers"),
    _Field("hour", 24, 0, _field_grammar(None), "numbers"),
    _Field("day of month", 31, 1, _field_grammar(None), "numbers"),
    _Field(
        "month",
        12,
        1,
        _field_grammar("jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"),
        "numbers or names like JAN",
    ),
    _Field(
        "day of week",
        7,
        0,
        _field_grammar("sun|mon|tue|wed|thu|fri|sat"),
        "numbers or names like SUN",
        ", 0 is Sunday",
    ),
)


class Cron(TypedDict):
    """A parsed five-field cron: the values each field allows, and whether the day fields were ``*``."""

    minute: set[int]
    hour: set[int]
    dom: set[int]
    month: set[int]
    dow: set[int]
    dom_any: bool
    dow_any: bool


# Longest cron kept: every field a long list still fits ("0,5,10,...,55 0,2,...,22 1,8,15,22 * MON-FRI").
MAX_CRON = 256


def parse_cron(expr: Any, *, stored: bool = False) -> Cron:
    """Parse a five-field cron expression (minute hour day-of-month month day-of-week) or refuse it.

    ``stored``: a window's cron as kept, perhaps by an earlier version, which took a range running backwards
    and wrapped it round (``22-2``); it is read so, rather than stop the window, and its list, from working.
    """
    # Celery's parser, imported here: the CLI imports this module (retention's durations) for every run.
    from celery.schedules import ParseException, crontab_parser

    if not isinstance(expr, str):
        raise BadInput(f"cron is text like '0 3 * * SUN', not {type(expr).__name__}", "cron")
    if len(expr) > MAX_CRON and not stored:
        # A 100 KB cron was stored, and listed, and echoed whole in its refusals (an outside test). One kept
        # by an earlier version is still read.
        raise BadInput(f"cron is at most {MAX_CRON} characters, not {len(expr)}", "cron")
    text = expr
    if not text.isascii() or not all(c == " " or c.isprintable() for c in text) or "\t" in text:
        raise BadInput(f"cron takes ASCII fields separated by spaces, not {text[:80]!r}", "cron")
    fields = text.split()
    if len(fields) != 5:
        raise BadInput(
            f"cron needs 5 fields (minute hour day month weekday), e.g. '0 3 * * SUN'; got {text[:80]!r}",
            "cron",
        )
    sets = []
    for written, f in zip(fields, _FIELDS, strict=True):
        if re.search(r"(?:^|,)[^,*-]+/", written):
            raise BadInput(
                f"cron {f.label} field {written!r} is invalid: a step needs * or a range before it, like "
                "*/15 or 5-59/15",
                "cron",
            )
        if not f.grammar.fullmatch(written):
            raise BadInput(
                f"cron {f.label} field {written!r} is invalid: use {f.values}, *, ranges (1-5), lists (1,3) "
                "and steps (*/15); # L W ? are not supported",
                "cron",
            )
        try:
            sets.append(set(crontab_parser(f.size, f.low).parse(written)))
        except (ValueError, ParseException) as exc:
            span = f"{f.label}: {f.low}-{f.low + f.size - 1}{f.range_note}"
            raise BadInput(f"cron {f.label} field {written!r} is invalid: {exc} ({span})", "cron") from exc
        if not stored:
            _no_backward_range(written, f)
    return {
        "minute": sets[0],
        "hour": sets[1],
        "dom": sets[2],
        "month": sets[3],
        "dow": sets[4],
        "dom_any": fields[2].startswith("*"),
        "dow_any": fields[4].startswith("*"),
    }


def unwrapped(expr: str) -> str:
    """Return a cron with each range that runs backwards written as the two ranges it was read as
    (``0 22-2 * * *`` → ``0 22-23,0-2 * * *``): a window kept from before can then be edited without its
    author having to rewrite a cron that still works (stepped ones are left for the check to refuse)."""
    from celery.schedules import ParseException

    fields = str(expr).split()
    if len(fields) != len(_FIELDS):
        return str(expr)
    out = []
    for written, f in zip(fields, _FIELDS, strict=True):
        items = []
        for item in written.split(","):
            try:
                ends = _backward(item, f)
            except (ValueError, ParseException):
                ends = None  # not a range this can read: the check says what is wrong with it
            items.append(_two_ranges(ends, f) if ends is not None and "/" not in item else item)
        out.append(",".join(items))
    return " ".join(out)


def _backward(item: str, f: _Field) -> tuple[str, str] | None:
    """Return the ends of a list item's range (its step aside) if it runs backwards (``12-1``), else None."""
    from celery.schedules import crontab_parser

    ends = item.split("/")[0].split("-")
    parse = crontab_parser(f.size, f.low).parse
    if len(ends) == 2 and min(parse(ends[0])) > min(parse(ends[1])):
        return ends[0], ends[1]
    return None


def _two_ranges(ends: tuple[str, str], f: _Field) -> str:
    """Return the two ranges a backward range wraps round to (``12-1`` → ``12-23,0-1``)."""
    return f"{ends[0]}-{f.low + f.size - 1},{f.low}-{ends[1]}"


def _no_backward_range(written: str, f: _Field) -> None:
    """Refuse a range that runs backwards (``12-1``): Celery's parser wraps it round, other crons refuse it,
    and a window read either way fires at hours its author did not mean (an outside test)."""
    for item in written.split(","):
        ends = _backward(item, f)
        if ends is not None:
            # A stepped one has no two-range form that keeps its step across the wrap (a reviewer).
            how = "ranges that run forwards" if "/" in item else f"two ranges, {_two_ranges(ends, f)}"
            raise BadInput(
                f"cron {f.label} field {written!r} is invalid: the range {ends[0]}-{ends[1]} runs backwards; "
                f"write it as {how}",
                "cron",
            )


# The longest a month can be, leap years included: a cron day the month never has never fires.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
# A window open longer than a week is a mistake (its next firing would start while it is still open).
MAX_DURATION = 7 * 86400


def cron_can_fire(cron: Cron) -> bool:
    """Tell whether a parsed cron ever matches a real date (``0 0 31 2 *`` never does)."""
    if not cron["dow_any"]:
        return True  # a weekday comes every week, and with a day of month too, cron takes either
    return any(d <= _MONTH_DAYS[m] for m in cron["month"] for d in cron["dom"])


def cron_matches(cron: Cron, local: datetime) -> bool:
    """Tell whether a local time falls on the cron (restricted day fields OR-ed; see the module)."""
    if (
        local.minute not in cron["minute"]
        or local.hour not in cron["hour"]
        or local.month not in cron["month"]
    ):
        return False
    dom_ok = local.day in cron["dom"]
    dow_ok = (local.isoweekday() % 7) in cron["dow"]
    if cron["dom_any"] or cron["dow_any"]:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def next_firing(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime | None:
    """Return the first local minute after ``after`` on which the cron fires, or None within 5 years."""
    local = after.astimezone(tz)
    hours, minutes = sorted(cron["hour"]), sorted(cron["minute"])
    for offset in range(5 * 366):  # 29 February needs up to four years
        day = local.date() + timedelta(days=offset)
        # The day fields decide; the first hour and minute of the cron only make the probe a match.
        if not cron_matches(cron, datetime(day.year, day.month, day.day, hours[0], minutes[0], tzinfo=tz)):
            continue
        for hour in hours:
            for minute in minutes:
                candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                if candidate > local and exists(candidate):
                    return candidate
    return None


def exists(local: datetime) -> bool:
    """Tell whether a local time happens at all: the hour a DST change skips never does, and a window set
    to a minute in it does not fire that day."""
    return local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(tzinfo=None)


@functools.cache
def _iana_names() -> frozenset[str]:
    # What ZoneInfo opens also includes this host's own files (localtime, posix/…): a window set to them
    # would fire at another hour on another host.
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def zone(name: Any) -> ZoneInfo:
    """Return the named IANA time zone or refuse it."""
    try:
        if str(name) not in _iana_names():
            raise ZoneInfoNotFoundError(str(name))
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadInput(
            f"unknown time zone {str(name)[:80]!r}; use an IANA name such as Europe/Berlin or UTC", "tz"
        ) from exc


def utc_minutes(minutes: set[int], tz: ZoneInfo, start: datetime | None = None) -> list[int]:
    """Return the UTC minutes at which a local minute of ``tz`` can fall, over every offset in two years."""
    start = start or datetime.now(UTC)
    offsets = {
        int((start + timedelta(days=d)).astimezone(tz).utcoffset().total_seconds() // 60) % 60  # type: ignore[union-attr]
        for d in range(0, 731, 7)
    }
    return sorted({(m - off) % 60 for m in minutes for off in offsets})

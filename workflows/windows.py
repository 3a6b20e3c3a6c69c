"""Maintenance windows: a cron schedule in a time zone that starts a fleet job, with a duration and a cutoff.

Schedules live in Redis through celery-redbeat, whose lock lets only one beat process fire them, however
many run. Redbeat evaluates crontabs in one time zone (UTC here) and keeps no zone per entry, so a window's
entry fires every hour at the UTC minutes its local minutes can fall on, and ``fire`` starts a job only when
the local time in the window's zone matches its cron: daylight saving changes then need no rescheduling.
A per-minute marker in Redis makes a repeated delivery of the same firing harmless.

After the cutoff (duration minus cutoff after the start) no new server starts; when the window ends, runs
still going finish and are recorded as overrunning. A window whose previous job still runs is skipped and
recorded, never stacked.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from celery.schedules import crontab_parser

from workers.errors import BadInput
from workers.labels import check_selector
from workers.redis_values import texts

from .fleet_plan import parse_amount
from .validate import check_params, workflow_named

__all__ = [
    "WindowStore",
    "cron_matches",
    "fire",
    "parse_cron",
    "parse_duration",
    "utc_minutes",
    "validate_window",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_UNITS = {"h": 3600, "m": 60, "s": 1, "d": 86400}
ENTRY_PREFIX = "hcloud-flow-window:"


def parse_duration(text: Any, name: str) -> int:
    """Parse ``2h``, ``30m``, ``1h30m``, ``90s`` or plain seconds into seconds."""
    if text is None:
        raise BadInput(f"{name} is missing; give it like 2h, 30m, 1h30m or 90s (--{name})", name)
    raw = str(text).strip().lower()
    if raw.isascii() and raw.isdigit():
        return int(raw)
    parts = re.fullmatch(r"((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?", raw)
    if not raw or parts is None:
        raise BadInput(f"{name} must look like 2h, 30m, 1h30m or 90s, not {text!r}", name)
    return sum(
        int(parts.group(i)) * _UNITS[u] for i, u in ((2, "d"), (4, "h"), (6, "m"), (8, "s")) if parts.group(i)
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


def parse_cron(expr: Any) -> Cron:
    """Parse a five-field cron expression (minute hour day-of-month month day-of-week) or refuse it."""
    fields = str(expr).split()
    if len(fields) != 5:
        raise BadInput(
            f"cron needs 5 fields (minute hour day month weekday), e.g. '0 3 * * SUN'; got {expr!r}", "cron"
        )
    limits = [(60, 0), (24, 0), (31, 1), (12, 1), (7, 0)]
    names = ["minute", "hour", "day of month", "month", "day of week"]
    sets = []
    for field, (size, low), label in zip(fields, limits, names, strict=True):
        try:
            sets.append(set(crontab_parser(size, low).parse(field)))
        except ValueError as exc:
            raise BadInput(f"cron {label} field {field!r} is invalid: {exc}", "cron") from exc
    return {
        "minute": sets[0],
        "hour": sets[1],
        "dom": sets[2],
        "month": sets[3],
        "dow": sets[4],
        "dom_any": fields[2] == "*",
        "dow_any": fields[4] == "*",
    }


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
    """Tell whether a local time falls on the cron (standard cron: restricted day fields are OR-ed)."""
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
                if candidate > local:
                    return candidate
    return None


def zone(name: Any) -> ZoneInfo:
    """Return the named IANA time zone or refuse it."""
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadInput(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC", "tz"
        ) from exc


def utc_minutes(minutes: set[int], tz: ZoneInfo, start: datetime | None = None) -> list[int]:
    """Return the UTC minutes at which a local minute of ``tz`` can fall, over every offset in two years."""
    start = start or datetime.now(UTC)
    offsets = {
        int((start + timedelta(days=d)).astimezone(tz).utcoffset().total_seconds() // 60) % 60  # type: ignore[union-attr]
        for d in range(0, 731, 7)
    }
    return sorted({(m - off) % 60 for m in minutes for off in offsets})


def validate_window(spec: dict[str, Any]) -> dict[str, Any]:
    """Check a window definition completely; return it cleaned. Nothing is stored on refusal."""
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput("window names are 1-63 lowercase letters, digits, '-', '_' or '.'", "name")
    if spec.get("cron") is None:
        raise BadInput("cron is missing; give it like --cron '0 3 * * SUN'", "cron")
    if not cron_can_fire(parse_cron(spec.get("cron"))):
        raise BadInput(f"cron {spec.get('cron')!r} never fires: no month has that day", "cron")
    tz = zone(spec.get("tz", "UTC"))
    duration = parse_duration(spec.get("duration"), "duration")
    if duration > MAX_DURATION:
        raise BadInput(f"duration is at most 7d, not {spec.get('duration')!r}", "duration")
    cutoff = parse_duration(spec.get("cutoff", 0), "cutoff")
    if duration <= 0:
        raise BadInput("duration must be longer than 0", "duration")
    if cutoff >= duration:
        raise BadInput(f"cutoff ({cutoff} s) must be shorter than the duration ({duration} s)", "cutoff")
    wf = workflow_named(spec.get("workflow"))
    params = check_params(wf, spec.get("params") or {})
    selector, servers = spec.get("selector"), spec.get("servers")
    if (selector is None) == (servers is None):
        raise BadInput("give exactly one of --selector or --servers", "selector")
    if selector is not None and (not isinstance(selector, str) or not selector.strip()):
        raise BadInput("the label selector is empty; e.g. 'env=staging'", "selector")
    if selector is not None:
        check_selector(selector)
    if servers is not None and (not isinstance(servers, list) or not servers):
        raise BadInput("servers must be a non-empty list of ids or names", "servers")
    for ref in servers or []:
        if isinstance(ref, bool) or not isinstance(ref, int | str) or not str(ref).strip():
            raise BadInput(f"servers holds {ref!r}; give each server as an id or a name", "servers")
    parse_amount(spec.get("max_concurrency", "1"), "max_concurrency", minimum=1)
    parse_amount(spec.get("max_errors", "0"), "max_errors", minimum=0)
    canary = spec.get("canary", 0)
    if isinstance(canary, bool) or not isinstance(canary, int) or canary < 0:
        raise BadInput("canary must be a whole number >= 0", "canary")
    return {
        "name": name,
        "cron": str(spec["cron"]),
        "tz": str(tz),
        "duration": duration,
        "cutoff": cutoff,
        "workflow": wf.name,
        "params": {k: v for k, v in params.items() if v is not None},
        "selector": selector,
        "servers": servers,
        "max_concurrency": str(spec.get("max_concurrency", "1")),
        "max_errors": str(spec.get("max_errors", "0")),
        "canary": canary,
        "paused": bool(spec.get("paused")),
    }


class WindowStore:
    """Window definitions and their history in Redis, and their redbeat entries."""

    def __init__(
        self, client: redis.Redis, app: Any, *, prefix: str = "hf", clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.app = app
        self.prefix = prefix
        self.clock = clock

    def _key(self, name: str) -> str:
        return f"{self.prefix}:window:{name}"

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.redis.get(self._key(name))
        return json.loads(raw) if raw else None

    def names(self) -> list[str]:
        return sorted(texts(self.redis.smembers(f"{self.prefix}:windows")))

    def save(self, window: dict[str, Any], *, replace: bool = False) -> None:
        """Store a validated window and (re)write its redbeat entry."""
        if not replace and self.redis.exists(self._key(window["name"])):
            raise BadInput(f"a window named {window['name']!r} exists; remove it first", "name")
        self.redis.set(self._key(window["name"]), json.dumps(window))
        self.redis.sadd(f"{self.prefix}:windows", window["name"])
        self._entry(window).save()

    def remove(self, name: str) -> None:
        if self.get(name) is None:
            raise BadInput(f"no window named {name!r}", "name")
        from redbeat import RedBeatSchedulerEntry

        with contextlib.suppress(KeyError):  # the entry is already gone
            RedBeatSchedulerEntry.from_key(self._entry_key(name), app=self.app).delete()
        self.redis.delete(self._key(name), f"{self._key(name)}:history")
        self.redis.srem(f"{self.prefix}:windows", name)

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        window = self.get(name)
        if window is None:
            raise BadInput(f"no window named {name!r}", "name")
        window["paused"] = paused
        self.redis.set(self._key(name), json.dumps(window))
        return window

    def record(self, name: str, entry: dict[str, Any]) -> None:
        key = f"{self._key(name)}:history"
        self.redis.lpush(key, json.dumps(entry))
        self.redis.ltrim(key, 0, 199)

    def history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(f"{self._key(name)}:history", 0, limit - 1)]

    def claim_firing(self, name: str, local: datetime) -> bool:
        """Take this window's firing for one local minute; False if it was already taken."""
        stamp = local.strftime("%Y%m%d%H%M")
        return bool(self.redis.set(f"{self._key(name)}:fired:{stamp}", "1", nx=True, ex=7200))

    def _entry_key(self, name: str) -> str:
        return f"{self.app.conf.redbeat_key_prefix}{ENTRY_PREFIX}{name}"

    def _entry(self, window: dict[str, Any]) -> Any:
        from celery.schedules import crontab
        from redbeat import RedBeatSchedulerEntry

        minutes = utc_minutes(parse_cron(window["cron"])["minute"], ZoneInfo(window["tz"]))
        schedule = crontab(minute=",".join(map(str, minutes)), hour="*", app=self.app)
        return RedBeatSchedulerEntry(
            f"{ENTRY_PREFIX}{window['name']}",
            "hcloud_flow.window_fire",
            schedule,
            kwargs={"name": window["name"]},
            app=self.app,
        )


# How late a firing may come (a beat failover, a busy queue) and still start its window.
LATE_TOLERANCE_MINUTES = 10


def _scheduled_minute(cron: Cron, local: datetime) -> datetime | None:
    """Return the window's minute this firing is for: now, or the latest one of the last few minutes."""
    minute = local.replace(second=0, microsecond=0)
    for back in range(LATE_TOLERANCE_MINUTES + 1):
        candidate = minute - timedelta(minutes=back)
        if cron_matches(cron, candidate):
            return candidate
    return None


def fire(windows: WindowStore, runner: Any, name: str, now: float) -> dict[str, Any]:
    """Start the window's fleet job if its cron matches this local minute; record what happened."""
    window = windows.get(name)
    if window is None:
        return {"window": name, "fired": False, "why": "no such window"}
    local = _scheduled_minute(parse_cron(window["cron"]), datetime.fromtimestamp(now, ZoneInfo(window["tz"])))
    if local is None:
        return {"window": name, "fired": False, "why": "not a minute of this window in its time zone"}
    if not windows.claim_firing(name, local):
        return {"window": name, "fired": False, "why": "this minute already fired"}
    start = local.timestamp()  # the window runs from its scheduled minute, even when its firing came late
    entry: dict[str, Any] = {"fired_at": now, "local": local.isoformat(timespec="minutes")}
    previous = window.get("last_job")
    prev_job = runner.store.get(previous) if previous else None
    if window.get("paused"):
        entry.update(outcome="skipped", reason="the window is paused")
    elif prev_job is not None and prev_job["state"] in ("running", "paused"):
        entry.update(outcome="skipped", reason=f"the previous job {previous} is still {prev_job['state']}")
    else:
        limits = {
            "name": name,
            "started_at": start,
            "cutoff_at": start + window["duration"] - window["cutoff"],
            "ends_at": start + window["duration"],
        }
        try:
            job = runner.start(
                workflow=window["workflow"],
                selector=window["selector"],
                servers=window["servers"],
                params=window["params"],
                max_concurrency=window["max_concurrency"],
                max_errors=window["max_errors"],
                canary=window["canary"],
                window=limits,
            )
        except BadInput as exc:
            entry.update(outcome="failed to start", reason=str(exc))
        else:
            entry.update(outcome="started", job_id=job["id"], servers=len(job["servers"]))
            window["last_job"] = job["id"]
            windows.redis.set(windows._key(name), json.dumps(window))
    windows.record(name, entry)
    return {"window": name, "fired": True, **entry}

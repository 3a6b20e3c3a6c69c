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
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
from redis.exceptions import LockError

from workers.counters import Counters
from workers.errors import BadInput, Conflict, HcloudFlowError, NotFound
from workers.projects import DEFAULT_PROJECT
from workers.redis_values import text, texts
from workers.run_store import FINAL

from .cron import Cron, cron_matches, parse_cron, unwrapped, utc_minutes

__all__ = [
    "ENTRY_PREFIX",
    "WindowStore",
    "edited",
    "fire",
    "validate_window",
    "window_fields",
    "with_next_firing",
]

ENTRY_PREFIX = "hcloud-flow-window:"
log = logging.getLogger(__name__)


def window_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Return a stored window's own fields (what ``validate_window`` takes), without what firing and
    editing added to the record (its last job, who changed it)."""
    from .specs import WindowSpec

    return {k: v for k, v in record.items() if k in WindowSpec.model_fields}


def with_next_firing(record: dict[str, Any], now: float) -> dict[str, Any]:
    """Return a stored window with its next firing (ISO, in its zone; None while paused), as every listing
    and view shows it."""
    from .cron import next_firing

    fires = None
    if not record.get("paused"):
        fires = next_firing(
            parse_cron(record["cron"], stored=True), ZoneInfo(record["tz"]), datetime.fromtimestamp(now, UTC)
        )
    return {**record, "next_firing": fires.isoformat() if fires else None}


def edited(old: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Return a window's fields after an edit: those given replace the old ones, and the workflow's
    parameters are merged one by one (a parameter given as None goes back to its default), and so is every
    other field given as None, where it has a default. Every entry point's edit: an edit of the
    description alone had dropped the window's retention, labels and grace.

    Another workflow drops the old parameters (they need not fit it); servers and a selector replace each
    other.
    """
    from .definitions import WORKFLOWS
    from .specs import WindowSpec

    if not set(given) - {"name"}:
        # It changed nothing but who changed the window last, and when (an outside test).
        raise BadInput("nothing to change: give at least one field or option", "name")
    out = {**old}
    params = dict(old.get("params") or {})
    workflow = given.get("workflow", old.get("workflow"))
    if workflow != old.get("workflow"):
        params = {}
    for name, value in (given.get("params") or {}).items():
        if value is None:
            known = {p.name for p in WORKFLOWS[workflow].params} if workflow in WORKFLOWS else set()
            if name not in known:
                raise BadInput(f"{workflow} has no parameter {name!r} to put back to its default", "params")
            params.pop(name, None)
        else:
            params[name] = value
    for key, value in given.items():
        if key == "params":
            continue
        if value is not None:
            out[key] = value
        elif WindowSpec.model_fields[key].is_required():
            # Null over HTTP had met each field's own check: "unknown time zone None", "not None".
            raise BadInput(f"{key} cannot be removed, it has no default: give a new {key}", key)
        else:
            out.pop(key, None)  # back to its default
    if "health_check" in given and given["health_check"] is None:
        for setting in ("health_timeout", "health_settle"):  # with the check gone, its settings go too
            if setting not in given:
                out.pop(setting, None)
    out["params"] = params
    if "cron" not in given and out.get("cron"):
        out["cron"] = unwrapped(out["cron"])  # kept from before with a range that runs backwards
    if given.get("selector") is not None:
        out["servers"] = None
    if given.get("servers") is not None:
        out["selector"] = None
    return out


def validate_window(spec: dict[str, Any]) -> dict[str, Any]:
    """Check a window definition completely (``WindowSpec``); return it cleaned. Refused: nothing stored."""
    from .specs import WindowSpec, checked

    return dict(checked(WindowSpec, spec).model_dump())


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

    def _last_job_key(self, name: str) -> str:
        """Where the job a window's last firing started is kept, beside its record (``note_job``)."""
        return f"{self._key(name)}:last_job"

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """The window's write lock: a record and its redbeat entry are written together, one writer at a
        time (two edits at once had left the record on one cron and the beat's entry on the other)."""
        lock = self.redis.lock(f"{self._key(name)}:lock", timeout=10, blocking_timeout=10)
        if not lock.acquire():
            raise Conflict(f"window {name!r} is being changed by someone else; try again", "name")
        try:
            yield
        finally:
            with contextlib.suppress(LockError):  # lapsed after 10 s: what was written stands
                lock.release()

    def _keep_last_job(self, name: str, old: dict[str, Any] | None) -> None:
        """Move a record's own last job (a window stored before it was kept beside) out beside it."""
        if old is not None and old.get("last_job"):
            self.redis.set(self._last_job_key(name), old["last_job"], nx=True)

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.redis.get(self._key(name))
        if not raw:
            return None
        record: dict[str, Any] = json.loads(raw)
        # Kept beside the record, so that a firing never writes the record over an edit or a pause.
        last = self.redis.get(self._last_job_key(name))
        if last:
            record["last_job"] = text(last)
        return record

    def names(self) -> list[str]:
        return sorted(texts(self.redis.smembers(f"{self.prefix}:windows")))

    def save(
        self,
        window: dict[str, Any],
        *,
        replace: bool = False,
        by: str | None = None,
        based_on: int | None = None,
    ) -> dict[str, Any]:
        """Store a validated window and (re)write its redbeat entry; return the stored record.

        The record says who changed it last, and when, and counts its revisions. An edit names the revision
        it was made from (``based_on``): if another change came in between, it is refused (Conflict), not
        written over that change.
        """
        self._check_served(window.get("project"))
        name = window["name"]
        with self._lock(name):
            old = self.get(name)
            if old is None and based_on is not None:
                # Removed while the edit was made: writing it would bring the window back (a reviewer).
                raise NotFound(f"no window named {name!r} (removed meanwhile)", "name")
            self._keep_last_job(name, old)
            if replace and old is not None and window_fields(old) == window:
                return old  # nothing changes: no new revision (it made other editors' edits conflict)
            if old is not None and based_on is not None and old.get("revision", 0) != based_on:
                raise Conflict(
                    f"window {name!r} was changed meanwhile by {old.get('changed_by') or 'someone'}; "
                    "read it again and make the edit on what it is now",
                    "name",
                )
            record = {
                **window,
                "changed_by": by,
                "changed_at": self.clock(),
                "revision": (old or {}).get("revision", 0) + 1,
            }
            record.pop("last_job", None)
            if record.get("project") is None:
                # Named now, not at each firing: a window must not move to another project when the workers'
                # default changes.
                record["project"] = self.default_project()
            # A new window is written only if none of that name exists (SET NX): of two adds racing, one wins.
            if not self.redis.set(self._key(name), json.dumps(record), nx=not replace):
                raise BadInput(f"a window named {name!r} exists; remove it first", "name")
            self.redis.sadd(f"{self.prefix}:windows", name)
            entry = self._entry(window)
            with contextlib.suppress(KeyError):
                # From when it last fired, not from now: an edit while the beat was down pushed a firing
                # still due (at most LATE_TOLERANCE_MINUTES late) to the next hour, with no trace of it.
                # Not across a change of its minutes, which would fire a new minute already past at once.
                was = type(entry).from_key(self._entry_key(name), app=self.app)
                if was.schedule.minute == entry.schedule.minute:
                    entry.last_run_at = was.last_run_at
            entry.save()
        return self.get(name) or record

    def _check_served(self, project: str | None) -> None:
        """Refuse a project the workers do not serve, as they noted in Redis (with --no-check too: a window
        that names one fails at every firing). Before any worker has noted its projects, none is refused."""
        from workers.runtime import noted_projects

        if project is None:  # the workers' default is named from what they noted (default_project)
            return
        noted = noted_projects(self.redis)
        if noted and project not in noted:
            served = ", ".join(sorted(noted))
            raise BadInput(
                f"no project {project!r} is served by the workers (they serve: {served})", "project"
            )

    def default_project(self) -> str:
        """Return the project the workers noted as their default (``hf:projects``), else "default"."""
        from workers.runtime import noted_projects

        noted = noted_projects(self.redis)
        return next((name for name, entry in noted.items() if entry.get("default")), DEFAULT_PROJECT)

    def remove(self, name: str) -> None:
        from redbeat import RedBeatSchedulerEntry

        with self._lock(name):
            if self.get(name) is None:
                raise NotFound(f"no window named {name!r}", "name")
            with contextlib.suppress(KeyError):  # the entry is already gone
                RedBeatSchedulerEntry.from_key(self._entry_key(name), app=self.app).delete()
            self.redis.delete(self._key(name), f"{self._key(name)}:history", self._last_job_key(name))
            self.redis.srem(f"{self.prefix}:windows", name)

    def set_paused(self, name: str, paused: bool, by: str | None = None) -> dict[str, Any]:
        with self._lock(name):
            window = self.get(name)
            if window is None:
                raise NotFound(f"no window named {name!r}", "name")
            self._keep_last_job(name, window)
            window.pop("last_job", None)
            window.update(
                paused=paused, changed_by=by, changed_at=self.clock(), revision=window.get("revision", 0) + 1
            )
            self.redis.set(self._key(name), json.dumps(window))
        return self.get(name) or window

    def note_job(self, name: str, job_id: str) -> None:
        """Note the job a firing started (its own key: the firing never writes the window's record); not for
        a window removed while it fired, which a window added again under its name would inherit."""

        def note() -> None:
            if self.redis.exists(self._key(name)):
                self.redis.set(self._last_job_key(name), job_id)

        try:
            with self._lock(name):
                note()
        except Conflict:  # the lock held by a stalled writer: the job has started, and must be noted
            log.warning("window %s: noting its job %s without its lock", name, job_id)
            note()

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

        minutes = utc_minutes(parse_cron(window["cron"], stored=True)["minute"], ZoneInfo(window["tz"]))
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
    """Return the window's minute this firing is for: now, or the latest one of the last few minutes.

    The minutes are counted back in real time: counted on the wall clock, the first firing after a DST gap
    took minutes the gap skipped for its own (a 02:55 window fired at 03:00, a 02:30 one did not fire).
    """
    minute = local.replace(second=0, microsecond=0).astimezone(UTC)
    for back in range(LATE_TOLERANCE_MINUTES + 1):
        candidate = (minute - timedelta(minutes=back)).astimezone(local.tzinfo)
        if cron_matches(cron, candidate):
            return candidate
    return None


def _approval_expired(job: dict[str, Any], now: float) -> bool:
    """Tell whether a job waits at an approval gate whose deadline has passed (its next advance ends it)."""
    approval = job.get("approval") or {}
    return job["state"] in ("awaiting_approval", "paused") and now >= float(approval.get("deadline", now + 1))


def fire(
    windows: WindowStore, runner_for: Callable[[str | None], Any], name: str, now: float
) -> dict[str, Any]:
    """Start the window's fleet job if its cron matches this local minute; record what happened.

    ``runner_for(project)`` returns the fleet runner of the project the window acts in.
    """
    window = windows.get(name)
    if window is None:
        return {"window": name, "fired": False, "why": "no such window"}
    runner: Any = None
    refused = ""
    try:
        runner = runner_for(window.get("project"))
    except BadInput as exc:  # the project is no longer served by the workers: say so in its history
        refused = str(exc)
    local = _scheduled_minute(
        parse_cron(window["cron"], stored=True), datetime.fromtimestamp(now, ZoneInfo(window["tz"]))
    )
    if local is None:
        return {"window": name, "fired": False, "why": "not a minute of this window in its time zone"}
    if not windows.claim_firing(name, local):
        return {"window": name, "fired": False, "why": "this minute already fired"}
    start = local.timestamp()  # the window runs from its scheduled minute, even when its firing came late
    entry: dict[str, Any] = {"fired_at": now, "local": local.isoformat(timespec="minutes")}
    previous = window.get("last_job")
    prev_job = runner.store.get(previous) if previous and runner is not None else None
    if prev_job is not None and _approval_expired(prev_job, now):
        # Its deadline (at the latest its window's cutoff) has passed and its wake-up has not come yet: at a
        # cutoff that falls on this minute, it was said to block this firing half a second before it ended.
        runner.advance(previous)
        prev_job = runner.store.get(previous)
    if window.get("paused"):  # first: a paused window whose project went away must not alert as failing
        entry.update(outcome="skipped", reason="the window is paused")
    elif runner is None:
        entry.update(outcome="failed to start", reason=refused)
    elif prev_job is not None and prev_job["state"] not in FINAL:  # running, paused or awaiting approval
        entry.update(outcome="skipped", reason=f"the previous job {previous} is still {prev_job['state']}")
    elif now >= start + window["duration"] - window["cutoff"]:
        # A firing this late (a beat failover, a long queue) could start no server: say so, start nothing.
        entry.update(
            outcome="skipped", reason=f"the firing came {now - start:.0f} s late, past the window's cutoff"
        )
    else:
        limits = {
            "name": name,
            "started_at": start,
            "cutoff_at": start + window["duration"] - window["cutoff"],
            "ends_at": start + window["duration"],
        }
        try:
            from .specs import FleetSpec

            # Every fleet field the window holds (a window stored before a field existed takes its default).
            fields = {k: window[k] for k in FleetSpec.model_fields if window.get(k) is not None}
            job = runner.start(window=limits, submitted_by=f"window {name}", **fields)
        except BadInput as exc:
            entry.update(outcome="failed to start", reason=str(exc))
        except HcloudFlowError as exc:
            # The API could not be asked (an outage through all of a request's retries): the firing was lost
            # with no trace but the worker's log, the window still listed as active (an outside test). Said
            # in its history, counted and told like any firing that could not start.
            entry.update(outcome="failed to start", reason=f"the API could not be asked: {exc}"[:500])
        else:
            entry.update(outcome="started", job_id=job["id"], servers=len(job["servers"]))
            windows.note_job(name, job["id"])
    windows.record(name, entry)
    Counters(windows.redis, windows.prefix).add("window_firings", (name, entry["outcome"]))
    if runner is None:  # its project is no longer served: the workers' default project tells of it
        with contextlib.suppress(BadInput):
            runner = runner_for(None)
    tell = getattr(runner, "on_event", None)
    if tell is not None:
        event = "window.fired" if entry["outcome"] == "started" else "window.skipped"
        tell(
            event,
            {"name": name, "project": window.get("project"), **entry, "notify": window.get("notify") or []},
        )
    return {"window": name, "fired": True, **entry}

"""The action monitor: one poll round at a time, cluster-wide, for every parked wait of every run.

A round takes a Redis lock, loads the waits that are due, fetches their actions with batched
``GET /actions?id=…`` (25 ids a request, topped up with waits that are not due yet, which costs nothing),
checks target states with as few list requests as the answer allows, and hands every finished wait to the
dispatcher, which continues (or fails) its Celery chain. Each wait's next poll follows its cadence: soon
after it starts, then backing off to a cap. No task sleeps and no broker message is spent while waiting.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from .client import MAX_IDS_PER_ACTIONS_GET
from .engine import Engine, parse_time, start_action
from .errors import ActionFailed, Blocked, HcloudFlowError, StepInProgress, WaitTimeout
from .redis_scripts import DELETE_IF_OWNER, EXPIRE_IF_OWNER
from .server_actions import ACTIONS

__all__ = ["Dispatcher", "Monitor", "RoundReport", "new_wait"]

log = logging.getLogger(__name__)

# A server list request answers 50 servers; below this many servers to check, single GETs are cheaper.
_LIST_THRESHOLD = 3
# Unknown to GET /actions this many rounds in a row: the action is gone, not late.
_MAX_MISSING = 5
# Progress below this says too little about the end to plan a poll on it.
_PROGRESS_HINT = 5
_MIN_PAUSE = 0.2


def _as_flow_error(exc: Exception) -> HcloudFlowError:
    """Return an error that can fail a step: ours as it is, anything else named for a bug report.

    Redis or network trouble is not the step's fault: it is raised again, so the round stops and the
    next one tries the same waits.
    """
    if isinstance(exc, redis.RedisError | OSError):
        raise exc
    if isinstance(exc, HcloudFlowError):
        return exc
    return HcloudFlowError(f"internal error while waiting ({type(exc).__name__}: {exc}); please report it")


class Dispatcher(Protocol):
    """Continues the chain of a wait that ended; implemented over Celery in workers/continuation.py."""

    def succeed(self, wait: dict[str, Any], result: dict[str, Any]) -> None: ...

    def fail(self, wait: dict[str, Any], exc: HcloudFlowError) -> None: ...

    def resend(self, wait: dict[str, Any]) -> None: ...


@dataclass
class RoundReport:
    """What one poll round did, for logs and benches."""

    waits: int = 0
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    resent: int = 0
    forced: int = 0
    errors: list[str] = field(default_factory=list)


def new_wait(
    engine: Engine,
    *,
    wait_id: str,
    step: str,
    server_id: int,
    action: dict[str, Any],
    result: dict[str, Any],
    request: dict[str, Any],
    deadline: float,
    phase: str = "action",
    target: str | None = None,
    force: bool = True,
    grace: float | None = None,
) -> dict[str, Any]:
    """Return a wait record for a step whose action was just started (or found)."""
    now = engine.clock()
    expected = engine.durations.expected(action.get("command")) if engine.durations else None
    first = now + engine.cadence.interval(0)
    if expected is not None and phase == "action":
        # Poll right at the expected end: sooner news, and no more requests than a blind first poll.
        first = now + max(0.2, expected - (now - (parse_time(action.get("started")) or now)))
    return {
        "id": wait_id,
        "step": step,
        "server_id": server_id,
        "action_id": int(action["id"]),
        "command": action.get("command"),
        "phase": phase,
        "target": target,
        "started": now,
        "deadline": now + deadline,
        "deadline_seconds": deadline,
        "polls": 0,
        "missing": 0,
        "progress": int(action.get("progress") or 0),
        "next": first,
        "expected": expected,
        "late_polls": 0,
        "force": force,
        "grace": engine.shutdown_grace if grace is None else grace,
        "fallback_at": None,
        "forced": False,
        "result": result,
        "request": request,
    }


class Monitor:
    """Poll rounds over the parked waits; safe to run in every worker process at once."""

    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        prefix: str = "hf",
        lock_ttl: float = 40.0,
        batch: int = 2000,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.lock_key = f"{prefix}:monitor:lock"
        self.lock_ttl = lock_ttl
        self.batch = batch
        self._release = engine.redis.register_script(DELETE_IF_OWNER)
        self._renew_script = engine.redis.register_script(EXPIRE_IF_OWNER)
        self._token = ""

    # -- the loop a worker thread runs ----------------------------------------------------------------

    def run_forever(self, stop: threading.Event, idle: float = 0.2) -> None:
        """Run rounds until ``stop`` is set; between rounds wait on the event, never in a task."""
        failures = 0
        while not stop.is_set():
            try:
                self.run_round()
                nxt = self.engine.waits.next_due()
                failures = 0
            except Exception:  # Redis or the API is away: keep the thread, back off, try again
                failures += 1
                log.exception("monitor round failed (%d in a row)", failures)
                stop.wait(min(10.0, 0.5 * 2 ** min(failures, 5)))
                continue
            pause = idle if nxt is None else max(0.0, min(idle, nxt - self.engine.clock()))
            stop.wait(pause or 0.01)

    def run_round(self) -> RoundReport | None:
        """Run one round if no other process is running one; return its report, or None."""
        report = RoundReport()
        now = self.engine.clock()
        nxt = self.engine.waits.next_due()
        if nxt is None or nxt > now:
            return report
        token = uuid.uuid4().hex
        self._token = token
        if not self.engine.redis.set(self.lock_key, token, nx=True, px=int(self.lock_ttl * 1000)):
            return None
        try:
            self._round(report)
        finally:
            self._release(keys=[self.lock_key], args=[token])
        return report

    # -- one round -------------------------------------------------------------------------------------

    def _renew(self) -> None:
        """Keep our round's lock before each request: it lapses soon only if this process died mid-round."""
        self._renew_script(keys=[self.lock_key], args=[self._token, int(self.lock_ttl * 1000)])

    def _round(self, report: RoundReport) -> None:
        engine = self.engine
        now = engine.clock()
        waits = engine.waits.load(engine.waits.due(now, self.batch))
        report.waits = len(waits)
        live = []
        for wait in waits:
            if now > wait["deadline"]:
                self._fail(wait, self._timeout(wait), report)
            else:
                live.append(wait)
        polling = [w for w in live if w["phase"] in ("action", "blocked")]
        checking = [w for w in live if w["phase"] == "state"]
        if polling:
            checking += self._poll_actions(polling, now, report)
        if checking:
            self._check_states(checking, report)

    def _poll_actions(
        self, waits: list[dict[str, Any]], now: float, report: RoundReport
    ) -> list[dict[str, Any]]:
        engine = self.engine
        room = math.ceil(len(waits) / MAX_IDS_PER_ACTIONS_GET) * MAX_IDS_PER_ACTIONS_GET - len(waits)
        extra = [
            w
            for w in engine.waits.load(engine.waits.upcoming(now, room))
            if w["phase"] in ("action", "blocked")
        ]
        waits = waits + extra
        try:
            self._renew()
            actions = engine.client.get_actions([w["action_id"] for w in waits])
        except HcloudFlowError as exc:
            report.errors.append(str(exc))
            for w in waits:
                self._reschedule(w)
            return []
        report.requests += math.ceil(len({w["action_id"] for w in waits}) / MAX_IDS_PER_ACTIONS_GET)
        by_id = {int(a["id"]): a for a in actions}
        to_check = []
        for wait in waits:
            action = by_id.get(wait["action_id"])
            try:
                if self._on_action(wait, action, report):
                    to_check.append(wait)
            except Exception as exc:  # one bad wait fails alone; it must not stall every other wait
                self._fail(wait, _as_flow_error(exc), report)
        return to_check

    def _on_action(self, wait: dict[str, Any], action: dict[str, Any] | None, report: RoundReport) -> bool:
        """Advance a wait from its action's news; return True if its target state is to be checked now."""
        if action is None:
            wait["missing"] += 1
            if wait["missing"] >= _MAX_MISSING:
                raise WaitTimeout(
                    wait["server_id"], wait["step"], wait["action_id"], "an action the API no longer knows", 0
                )
            self._reschedule(wait)
            return False
        wait["missing"] = 0
        status = action["status"]
        if status == "running":
            progress = int(action.get("progress") or 0)
            if wait["phase"] == "action" and progress != wait["progress"]:
                wait["progress"] = progress
                self.engine.ledger.update(wait["id"], progress=progress)
            self._reschedule(wait)
            return False
        if wait["phase"] == "blocked":
            # Send first, then forget: a crash in between sends twice, and the step's claim and ledger
            # make the second delivery harmless; the other order could lose the step.
            self.dispatcher.resend(wait)
            self.engine.waits.remove(wait["id"])
            report.resent += 1
            return False
        if status == "error":
            err = action.get("error") or {}
            raise ActionFailed(
                wait["server_id"],
                wait["step"],
                wait["action_id"],
                str(err.get("code", "unknown_error")),
                str(err.get("message", "the action failed")),
            )
        wait["progress"] = 100
        wait["result"]["finished"] = action.get("finished")
        started, finished = parse_time(action.get("started")), parse_time(action.get("finished"))
        if self.engine.durations is not None and started is not None and finished is not None:
            self.engine.durations.observe(action.get("command"), finished - started)
        if not wait["target"]:
            self._succeed(wait, {}, report)
            return False
        wait["phase"] = "state"
        wait["polls"] = 0
        if wait["step"] == "shutdown" and wait["fallback_at"] is None:
            wait["fallback_at"] = self.engine.clock() + wait["grace"]
        return True

    def _check_states(self, waits: list[dict[str, Any]], report: RoundReport) -> None:
        servers = [w for w in waits if w["target"] in ("running", "off")]
        images = [w for w in waits if w["target"] == "image_available"]
        try:
            self._renew()
            server_status = self._server_statuses({w["server_id"] for w in servers}, report)
            image_status = self._image_statuses(
                {w["result"]["outputs"]["image"]["id"] for w in images}, report
            )
        except HcloudFlowError as exc:
            report.errors.append(str(exc))
            for w in waits:
                self._reschedule(w)
            return
        for wait in servers:
            try:
                self._server_wait(wait, server_status.get(wait["server_id"]), report)
            except Exception as exc:
                self._fail(wait, _as_flow_error(exc), report)
        for wait in images:
            try:
                self._image_wait(wait, image_status.get(wait["result"]["outputs"]["image"]["id"]), report)
            except Exception as exc:
                self._fail(wait, _as_flow_error(exc), report)

    def _server_wait(self, wait: dict[str, Any], status: str | None, report: RoundReport) -> None:
        if status == wait["target"]:
            self._succeed(wait, {"server_status": status}, report)
        elif wait["step"] == "shutdown" and self._should_force(wait):
            self._force_off(wait, report)
        else:
            self._reschedule(wait)

    def _image_wait(self, wait: dict[str, Any], status: str | None, report: RoundReport) -> None:
        if status == "available":
            self._succeed(wait, {"image_status": status}, report)
        elif status is None:
            gone = "an image that no longer exists"
            self._fail(wait, WaitTimeout(wait["server_id"], wait["step"], wait["action_id"], gone, 0), report)
        else:
            self._reschedule(wait)

    def _server_statuses(self, ids: set[int], report: RoundReport) -> dict[int, str]:
        client = self.engine.client
        if len(ids) < _LIST_THRESHOLD:
            report.requests += len(ids)
            out: dict[int, str] = {}
            for i in ids:
                try:
                    out[i] = client.get_server(i)["status"]
                except HcloudFlowError as exc:
                    if getattr(exc, "code", None) != "not_found":
                        raise  # a deleted server just never reaches its state; its deadline says so
            return out
        found: dict[int, str] = {}
        for page in client.iter_server_pages():
            report.requests += 1
            found.update({int(s["id"]): s["status"] for s in page if int(s["id"]) in ids})
            if ids <= found.keys():
                break
        return found

    def _image_statuses(self, ids: set[int], report: RoundReport) -> dict[int, str]:
        client = self.engine.client
        if not ids:
            return {}
        if len(ids) < _LIST_THRESHOLD:
            report.requests += len(ids)
            out = {}
            for i in ids:
                try:
                    out[i] = client.get_image(i)["status"]
                except HcloudFlowError as exc:
                    if getattr(exc, "code", None) != "not_found":
                        raise
            return out
        found: dict[int, str] = {}
        # Newest first: our images are the newest, so the walk stops after a page or two.
        for page in client.iter_image_pages(sort="id:desc"):
            report.requests += 1
            found.update({int(i["id"]): i["status"] for i in page if int(i["id"]) in ids})
            if ids <= found.keys() or not page or min(int(i["id"]) for i in page) < min(ids):
                break
        return found

    def _should_force(self, wait: dict[str, Any]) -> bool:
        return (
            bool(wait["force"]) and not wait["forced"] and self.engine.clock() >= (wait["fallback_at"] or 0)
        )

    def _force_off(self, wait: dict[str, Any], report: RoundReport) -> None:
        """Power off a server whose guest ignored the ACPI shutdown, as a part of the same step."""
        try:
            action, _, _ = start_action(
                self.engine, ACTIONS["power_off"], wait["server_id"], {}, wait["id"] + ":force"
            )
        except (Blocked, StepInProgress):
            self._reschedule(wait)
            return
        except HcloudFlowError as exc:
            self._fail(wait, exc, report)
            return
        log.warning(
            "server %s ignored the ACPI shutdown for %.0f s; powering it off (action %s)",
            wait["server_id"],
            wait["grace"],
            action["id"],
        )
        wait.update(action_id=int(action["id"]), phase="action", forced=True, polls=0)
        wait["result"]["forced"] = True
        wait["result"]["force_action_id"] = int(action["id"])
        report.forced += 1
        report.requests += 1
        self._reschedule(wait)

    # -- endings ---------------------------------------------------------------------------------------

    def _timeout(self, wait: dict[str, Any]) -> WaitTimeout:
        what = {
            "action": f"action {wait['action_id']} to finish",
            "blocked": "the server's running action to end",
        }
        waited_for = what.get(wait["phase"], f"the {wait['target']} state")
        return WaitTimeout(
            wait["server_id"], wait["step"], wait["action_id"], waited_for, wait["deadline_seconds"]
        )

    def _reschedule(self, wait: dict[str, Any]) -> None:
        """Set the wait's next poll: at its action's expected end when that can be told, else backing off."""
        now = self.engine.clock()
        wait["polls"] += 1
        age = now - wait["started"]
        expected = None
        if wait["phase"] == "action":
            expected = wait.get("expected")
            progress = int(wait.get("progress") or 0)
            if expected is None and _PROGRESS_HINT <= progress < 100:
                # No history yet: the action's own progress tells when it should end.
                expected = age * 100 / progress
        cadence = self.engine.cadence
        if expected is not None and age < expected:
            wait["next"] = max(now + _MIN_PAUSE, wait["started"] + expected)
        elif expected is not None:
            # Past the expected end: poll soon again, backing off from there.
            wait["late_polls"] = wait.get("late_polls", 0) + 1
            wait["next"] = now + cadence.interval(wait["late_polls"] - 1)
        else:
            # Backing off with the wait's age, not its poll count: polls that merely filled a batch
            # request early must not push the next one further out.
            wait["next"] = now + max(cadence.first, min(cadence.cap, age * (cadence.growth - 1)))
        self.engine.waits.save(wait)

    def _succeed(self, wait: dict[str, Any], extra: dict[str, Any], report: RoundReport) -> None:
        result = {**wait["result"], **extra, "status": "success"}
        result["seconds"] = round(self.engine.clock() - wait["started"], 3)
        self.engine.ledger.update(wait["id"], status="success", progress=100)
        # Dispatch first, then forget: a crash in between re-dispatches, and the next step's ledger
        # turns the duplicate into a re-attach instead of a second action.
        self.dispatcher.succeed(wait, result)
        self.engine.waits.remove(wait["id"])
        report.succeeded += 1

    def _fail(self, wait: dict[str, Any], exc: HcloudFlowError, report: RoundReport) -> None:
        log.warning("step failed: %s", exc)
        self.engine.ledger.update(wait["id"], status="failed")
        self.dispatcher.fail(wait, exc)
        self.engine.waits.remove(wait["id"])
        report.failed += 1

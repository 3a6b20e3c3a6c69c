"""The action monitor: one poll round at a time, cluster-wide, for every parked wait of every run.

A round takes a Redis lock, loads the waits that are due, and observes what they need in as few requests
as the answers allow: their actions with batched ``GET /actions?id=…`` (25 ids a request, topped up with
waits not yet due, which costs nothing), then the target states of those whose action succeeded. Each
wait then goes through ``wait_state.advance``, the one pure decision, and the monitor carries out the
effect it returns: park it again, continue or fail its chain, resend its step, or force the server off.
No task sleeps and no broker message is spent while waiting.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import redis

from .client import MAX_IDS_PER_ACTIONS_GET, MAX_PER_PAGE
from .deferred import Deferred
from .durations import parse_time
from .engine import Engine, start_action
from .errors import Blocked, HcloudFlowError, RateBudgetExhausted, StepInProgress
from .redis_scripts import DELETE_IF_OWNER, EXPIRE_IF_OWNER
from .server_actions import ACTIONS
from .wait_state import (
    GONE,
    HANDOFF_AFTER,
    MIN_PAUSE,
    OTHER,
    Effect,
    Fail,
    ForceOff,
    Observation,
    Phase,
    Poll,
    Resend,
    Succeed,
    Wait,
    advance,
    after_force,
    rules_for,
)

__all__ = ["Dispatcher", "Monitor", "RoundReport"]

log = logging.getLogger(__name__)

# The budget is scarce below its bulk floor plus this share of the limit: rounds then space out (_gap).
SCARCE_MARGIN = 0.05
# While the budget is scarce, a round at most once per this many requests' refill, and never less often
# than every SCARCE_GAP_CAP seconds (on a real project's 1 request a second: every 10 s).
SCARCE_ROUNDS_PER_REFILL = 20.0
SCARCE_GAP_CAP = 10.0
# A server list request answers 50 servers; below this many servers to check, single GETs are cheaper.
_LIST_THRESHOLD = 3
_WATCHING_ACTIONS = (Phase.ACTION, Phase.BLOCKED)


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


def _read_each(get: Callable[[int], dict[str, Any]], ids: set[int], report: RoundReport) -> dict[int, str]:
    """Return the status of each resource read alone; one the API no longer knows is left out (gone)."""
    out: dict[int, str] = {}
    for i in ids:
        report.requests += 1
        try:
            out[i] = get(i)["status"]
        except HcloudFlowError as exc:
            if getattr(exc, "code", None) != "not_found":
                raise
    return out


class Dispatcher(Protocol):
    """Continues the chain of a wait that ended; implemented over Celery in workers/continuation.py."""

    def succeed(self, request: dict[str, Any], result: dict[str, Any]) -> None: ...

    def fail(self, request: dict[str, Any], exc: HcloudFlowError, run_id: str | None) -> None: ...

    def resend(self, request: dict[str, Any]) -> None: ...


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
    unreachable: bool = False  # a read failed for want of the API itself (not of the rate budget)


class _Endings:
    """A round's endings, each begun as soon as it is decided (in a pool when there is one).

    ``close`` waits for all of them, counts their outcomes, and raises the first failure: every ending is
    carried out even if another failed.
    """

    def __init__(self, pool: cf.ThreadPoolExecutor | None, end: Callable[[Wait, Effect], str | None]) -> None:
        self.pool = pool
        self.end = end
        self.futures: list[cf.Future[str | None]] = []

    def submit(self, wait: Wait, effect: Effect) -> None:
        if self.pool is not None:
            self.futures.append(self.pool.submit(self.end, wait, effect))
            return
        done: cf.Future[str | None] = cf.Future()
        try:
            done.set_result(self.end(wait, effect))
        except Exception as exc:
            done.set_exception(exc)
        self.futures.append(done)

    def close(self, report: RoundReport, count: Callable[[RoundReport, str | None], None]) -> None:
        cf.wait(self.futures)
        errors = [e for f in self.futures if (e := f.exception()) is not None]
        for f in self.futures:
            if f.exception() is None:
                count(report, f.result())
        if errors:
            raise errors[0]


ALIVE_EVERY = 5.0
# A monitor whose round could not reach the API takes no round for this long, doubling up to the cap: a
# worker with a broken proxy held the round lock through its retries and pushed every wait's next poll back.
FAILING_PAUSE_FIRST = 1.0
FAILING_PAUSE_CAP = 30.0
FAILING_LOG_EVERY = 30.0
# A round's reads retry for at most this long: the round holds the cluster's one round lock, and a read that
# fails is made again by the next round anyway (by default a request retries for up to about 30 s).
RETRY_WITHIN = 3.0


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
        on_end: Callable[[Wait, bool], None] | None = None,
        send: Callable[[str, dict[str, Any]], None] | None = None,
        gap: float = 0.25,
        enders: int = 8,
        deferred: Deferred | None = None,
    ) -> None:
        # Least time between the starts of two rounds, cluster-wide. Rounds run only when a wait is due, so a
        # shorter gap costs requests only where ends fall close together: at 100 servers, 0.25 s against
        # 0.5 s cut the end-to-next-POST median from 0.55 s to 0.36 s for 1% more requests (bench/polling.py).
        self.gap = gap
        self.engine = engine
        # Only a monitor that can send them looks at deferred messages (one set per installation).
        self.deferred = deferred or (Deferred(engine.redis, prefix=prefix) if send is not None else None)
        self.send = send  # sends a deferred task message (workers/deferred.py) when it is due
        self.on_end = on_end  # told of each step that ended here (succeeded or not), after its dispatch
        self.dispatcher = dispatcher
        self.lock_key = f"{prefix}:monitor:lock"
        self.beat_key = f"{prefix}:monitor:last_round"
        self.start_key = f"{prefix}:monitor:round_started"
        # Set by every monitor loop, idle or not, at most every ALIVE_EVERY s: what /metrics and the
        # dashboard read to say the monitor runs (a quiet system has no rounds to show for it).
        self.alive_key = f"{prefix}:monitor:alive"
        self._alive_noted = 0.0
        self.lock_ttl = lock_ttl
        self.batch = batch
        self._release = engine.redis.register_script(DELETE_IF_OWNER)
        self._renew_script = engine.redis.register_script(EXPIRE_IF_OWNER)
        self._token = ""
        self.enders = enders  # endings of one round carried out at once
        self._ending: _Endings | None = None  # the round's endings under way (None outside a round)
        # Kept from round to round: Celery's result backend and its Redis connections are per thread, and a
        # pool made afresh for each round built eight backends and connected them again every round (a
        # fifth of the endings' time in a py-spy profile of a 100-server bench/polling.py run).
        self._enders: cf.ThreadPoolExecutor | None = None
        self._parking: dict[str, Wait] = {}  # the round's waits to poll again, parked at its end
        self._progress: dict[str, int] = {}  # the round's new progress figures, written with the parks
        self._learned: list[dict[str, Any]] = []  # the round's finished actions, to learn durations from
        self._not_before = 0.0  # when a round skipped for another process's round may be tried again
        self._idle_look: tuple[float | None, float | None] | None = None  # what a round with nothing due read
        self._failing = 0  # rounds in a row that could not reach the API
        self._failing_until = 0.0  # no round here before this (see _note_failures)
        self._failure_logged = 0.0

    # -- the loop a worker thread runs ----------------------------------------------------------------

    def run_forever(self, stop: threading.Event, idle: float = 0.2) -> None:
        """Run rounds until ``stop`` is set; between rounds wait on the event, never in a task."""
        failures = 0
        while not stop.is_set():
            try:
                if self.engine.clock() - self._alive_noted >= ALIVE_EVERY:
                    self._alive_noted = self.engine.clock()
                    self.engine.redis.set(self.alive_key, repr(self._alive_noted), ex=int(ALIVE_EVERY * 12))
                report = self.run_round()
                # When nothing was due, run_round has just read when something will be: no second read.
                idle_look, self._idle_look = self._idle_look, None
                nxt, later = idle_look or self._soonest()
                failures = 0
                if report is None and nxt is not None:
                    # Another process runs a round now, or began one a moment ago: nothing is ours to do
                    # before that round's gap has passed. Asking again every 10 ms meanwhile only spent the
                    # CPU that the other side needed.
                    nxt = max(nxt, self._not_before)
            except Exception:  # Redis or the API is away: keep the thread, back off, try again
                failures += 1
                log.exception("monitor round failed (%d in a row)", failures)
                stop.wait(min(10.0, 0.5 * 2 ** min(failures, 5)))
                continue
            nxt = min((t for t in (nxt, later) if t is not None), default=None)
            pause = idle if nxt is None else max(0.0, min(idle, nxt - self.engine.clock()))
            stop.wait(pause or 0.01)

    def run_round(self) -> RoundReport | None:
        """Run one round if no other process is running one; return its report, or None."""
        report = RoundReport()
        self._idle_look = None
        now = self.engine.clock()
        if now < self._failing_until:
            # Our last rounds could not reach the API (a bad proxy, this host's network): leave the rounds to
            # the other workers' monitors meanwhile; the waits we could not look at are still due for them.
            self._not_before = self._failing_until
            return None
        soonest = self._soonest()
        nxt = min((t for t in soonest if t is not None), default=None)
        if nxt is None or nxt > now:
            self._idle_look = soonest
            return report
        token = uuid.uuid4().hex
        self._token = token
        if not self.engine.redis.set(self.lock_key, token, nx=True, px=int(self.lock_ttl * 1000)):
            self._not_before = now + min(self.gap, 0.05)
            return None
        try:
            last = self.engine.redis.get(self.start_key)
            gap = self._gap()
            if last is not None and 0 <= now - float(last) < gap:
                # Another round began a moment ago (in any process): let what falls due meanwhile gather, so
                # that one request carries it all, instead of a round of a few ids every idle tick.
                self._not_before = float(last) + gap
                return None
            self.engine.redis.set(self.start_key, repr(now))
            self._send_deferred(now)
            self._round(report)
            self.engine.redis.set(self.beat_key, repr(self.engine.clock()))
            self._note_failures(report)
        finally:
            self._release(keys=[self.lock_key], args=[token])
        return report

    def _note_failures(self, report: RoundReport) -> None:
        """After a round that could not reach the API, take none for a while (longer each time); log it.

        A round short of rate budget is not one of them: rounds already space out while the budget is
        scarce (_gap), and backing off further would only slow the job down.
        """
        if not report.unreachable:
            self._failing = 0
            self._failing_until = 0.0
            return
        self._failing += 1
        pause = min(FAILING_PAUSE_CAP, FAILING_PAUSE_FIRST * 2 ** (self._failing - 1))
        now = self.engine.clock()
        self._failing_until = now + pause
        if now - self._failure_logged >= FAILING_LOG_EVERY:
            self._failure_logged = now
            log.warning(
                "monitor round could not reach the API (%d in a row): %s; the waits it could not look at "
                "stay due, and this worker leaves rounds to the others for %.1f s",
                self._failing,
                report.errors[0],
                pause,
            )

    def _soonest(self) -> tuple[float | None, float | None]:
        """Return when the soonest wait and the soonest deferred message fall due (None: there is none)."""
        later = self.deferred.next_due() if self.deferred is not None else None
        return self.engine.waits.next_due(), later

    # -- one round -------------------------------------------------------------------------------------

    def _gap(self) -> float:
        """Return the least time between two rounds: longer while the rate budget is scarce.

        With requests to spare, a round every ``gap`` seconds keeps hand-offs short. When the budget runs
        low, requests are the job's time (each one waits for refill), so rounds gather more: one per
        refill of ``SCARCE_ROUNDS_PER_REFILL`` requests, at most ``SCARCE_GAP_CAP`` s apart. One request
        then carries more ids, and one server list page more states.
        """
        budget = getattr(self.engine.client, "budget", None)
        if budget is None:
            return self.gap
        state = budget.snapshot()
        limit = state.get("limit") or budget.default_limit
        if state.get("tokens", limit) >= limit * (budget.bulk_reserve + SCARCE_MARGIN):
            return self.gap
        return max(self.gap, min(SCARCE_GAP_CAP, SCARCE_ROUNDS_PER_REFILL / budget.rate()))

    def _send_deferred(self, now: float) -> None:
        if self.send is None or self.deferred is None:
            return
        for sent, entry in self.deferred.due(now):
            # Send first, then forget: a crash in between sends twice, which a deferred task must bear.
            self.send(entry["task"], entry["kwargs"])
            self.deferred.done(sent)

    def _renew(self) -> None:
        """Keep our round's lock before each request: it lapses soon only if this process died mid-round."""
        self._renew_script(keys=[self.lock_key], args=[self._token, int(self.lock_ttl * 1000)])

    def _round(self, report: RoundReport) -> None:
        """Decide on every due wait; end the finished ones while the round goes on; park the rest at once.

        An ending (the next step's message, the records) used to wait for the whole round: the decisions on
        fifty waits, each parked with its own round trip, and the state reads after them. Now each ending
        starts as soon as it is decided, and the waits polled again are parked in one pipeline at the end.
        """
        self._parking = {}
        self._learned = []
        if self._enders is None and self.enders > 1:
            self._enders = cf.ThreadPoolExecutor(max_workers=self.enders, thread_name_prefix="monitor-ending")
        self._ending = _Endings(self._enders, self._end)
        try:
            self._decide_round(report)
            self._park_all()
            self._learn_all()
        finally:
            endings, self._ending = self._ending, None
            endings.close(report, self._count)

    def _decide_round(self, report: RoundReport) -> None:
        engine = self.engine
        now = engine.clock()
        due = engine.waits.load(engine.waits.due(now, self.batch))
        report.waits = len(due)
        watching = [w for w in due if w.phase in _WATCHING_ACTIONS and now <= w.deadline]
        seen, topped = self._observe_actions(watching, now, report) if watching else ({}, [])
        unseen = {w.id for w in watching} if seen is None else set()
        states: list[Wait] = []
        for wait in due + topped:
            if wait.phase is Phase.STATE:
                states.append(wait)
                continue
            if wait.id in unseen:
                continue  # not looked at: left due, so that the next round (here or elsewhere) looks at once
            nxt = self._step(wait, (seen or {}).get(wait.id, Observation(now)), report)
            if nxt is not None and nxt.phase is Phase.STATE and nxt.next <= now:
                states.append(nxt)  # its action just succeeded: look at the target in this same round
        if states:
            observed = self._observe_states(states, now, report)
            for wait in states:
                if observed is None and now <= wait.deadline:
                    continue  # as above: its state was not read, it stays due
                self._step(wait, (observed or {}).get(wait.id, Observation(now)), report)

    def _step(self, wait: Wait, seen: Observation, report: RoundReport) -> Wait | None:
        """Decide on one wait and carry out the effect; return the wait as parked again, if it was."""
        try:
            if (
                seen.action is not None
                and seen.action.get("status") == "success"
                and wait.phase is Phase.ACTION
            ):
                self._learned.append(seen.action)
            nxt, effect = advance(wait, seen, rules_for(wait.action), self.engine.cadence)
            return self._apply(wait, nxt, effect, report)
        except Exception as exc:  # one bad wait fails alone; it must not stall every other wait
            self._finish(wait, Fail(_as_flow_error(exc)))
            return None

    def _apply(self, old: Wait, wait: Wait, effect: Effect, report: RoundReport) -> Wait | None:
        if wait.progress != old.progress and wait.progress < 100:
            self._progress[wait.id] = wait.progress  # written with the round's parks
        if isinstance(effect, Poll):
            parked = replace(wait, next=effect.at)
            self._park(parked)
            return parked
        if isinstance(effect, ForceOff):
            return self._force(wait, effect, report)
        self._finish(wait, effect)
        return None

    # -- observing -------------------------------------------------------------------------------------

    def _observe_actions(
        self, waits: list[Wait], now: float, report: RoundReport
    ) -> tuple[dict[str, Observation] | None, list[Wait]]:
        """Fetch the actions of these waits; return what was seen (None: the API could not be asked), and
        the waits topped into the batch.

        Every action we wait on is a server action, read 50 a request from ``GET /servers/actions``. An
        id missing there is asked once more of ``GET /actions`` before it counts as gone: "gone" decides
        what a step does next, and costs nothing in the usual round where every id is found.
        """
        engine = self.engine
        room = math.ceil(len(waits) / MAX_PER_PAGE) * MAX_PER_PAGE - len(waits)
        due = {w.id for w in waits}
        topped = [
            w
            for w in engine.waits.load(engine.waits.upcoming(now, room))
            if w.phase in _WATCHING_ACTIONS and w.id not in due
        ]
        everyone = waits + topped
        ids = {int(w.action_id) for w in everyone if w.action_id is not None}
        try:
            self._renew()
            with engine.client.retry_within(RETRY_WITHIN):
                actions = engine.client.get_server_actions(sorted(ids))
            report.requests += math.ceil(len(ids) / MAX_PER_PAGE)
            missing = ids - {int(a["id"]) for a in actions}
            if missing:
                with engine.client.retry_within(RETRY_WITHIN):
                    actions += engine.client.get_actions(sorted(missing))
                report.requests += math.ceil(len(missing) / MAX_IDS_PER_ACTIONS_GET)
        except HcloudFlowError as exc:
            report.errors.append(str(exc))
            report.unreachable = report.unreachable or not isinstance(exc, RateBudgetExhausted)
            return None, []
        by_id = {int(a["id"]): a for a in actions}
        if by_id and engine.high_water is not None:
            engine.high_water.observe(max(by_id), now)
        seen = {}
        for w in everyone:
            action = by_id.get(int(w.action_id)) if w.action_id is not None else None
            seen[w.id] = Observation(now, action=action, action_gone=action is None)
        return seen, topped

    def _observe_states(
        self, waits: list[Wait], now: float, report: RoundReport
    ) -> dict[str, Observation] | None:
        """Read the target states of these waits; None when the API could not be asked."""
        servers = [w for w in waits if rules_for(w.action).target in ("running", "off")]
        images = [w for w in waits if rules_for(w.action).target == "image_available" and w.image_id]
        try:
            self._renew()
            with self.engine.client.retry_within(RETRY_WITHIN):
                server_status = self._server_statuses(
                    {w.server_id: str(rules_for(w.action).target) for w in servers}, report
                )
                image_status = self._image_statuses({int(w.image_id or 0) for w in images}, report)
        except HcloudFlowError as exc:
            report.errors.append(str(exc))
            report.unreachable = report.unreachable or not isinstance(exc, RateBudgetExhausted)
            return None
        out = {w.id: Observation(now, server_status=server_status.get(w.server_id, GONE)) for w in servers}
        out.update(
            {
                w.id: Observation(now, image_status=image_status.get(int(w.image_id or 0), GONE))
                for w in images
            }
        )
        return out

    def _server_statuses(self, targets: dict[int, str], report: RoundReport) -> dict[int, str]:
        """Return the status of each server, or OTHER for one listed as not (yet) in its target state.

        Per target state, the first page of ``GET /servers?status=<target>`` (50 servers) says how many
        servers are there. Where walking the rest costs fewer requests than reading the servers still
        missing one by one, the pages are walked (a fleet: few pages, many servers); otherwise the missing
        ones are read alone (a few servers in a project full of running ones).

        Newest first: a fleet job starts its servers in id order, so those reaching their target state in
        this round are mostly the newest there. Oldest first, the walk crossed every page of the servers
        that got there in earlier rounds to find them: at 400 servers that was 81 list requests a job, and
        33 newest first (bench/polling.py).
        """
        client = self.engine.client
        found: dict[int, str] = {}
        single: set[int] = set()
        for target in sorted(set(targets.values())):
            wanted = {i for i, t in targets.items() if t == target}
            if len(wanted) < _LIST_THRESHOLD:
                single |= wanted
                continue
            page: int | None = 1
            while page:
                servers, pagination = client.server_page([("status", target), ("sort", "id:desc")], page)
                report.requests += 1
                found.update({int(s["id"]): s["status"] for s in servers if int(s["id"]) in wanted})
                missing = wanted - found.keys()
                nxt, last = pagination.get("next_page"), pagination.get("last_page")
                if not missing or not nxt:
                    break
                if last is not None and int(last) - int(nxt) + 1 >= len(missing):
                    single |= missing  # fewer requests to read them alone than to walk the pages left
                    break
                page = int(nxt)
            found.update({i: OTHER for i in wanted - found.keys() - single})
        found.update(_read_each(client.get_server, single, report))
        return found

    def _image_statuses(self, ids: set[int], report: RoundReport) -> dict[int, str]:
        client = self.engine.client
        if not ids:
            return {}
        if len(ids) < _LIST_THRESHOLD:
            return _read_each(client.get_image, ids, report)
        # One page, newest first: the images just made are the newest. Those older than that page are taken
        # as available on their create_image action's word (the API makes the image available as that
        # action succeeds; Terraform's snapshot resource waits for the action alone). Walking on cost a
        # fleet of 400 eight pages a round, a seventh of its requests, to read what the action had said.
        page = next(iter(client.iter_image_pages(sort="id:desc")), [])
        report.requests += 1
        found = {int(i["id"]): i["status"] for i in page if int(i["id"]) in ids}
        if len(page) >= MAX_PER_PAGE:
            oldest_listed = min(int(i["id"]) for i in page)
            found.update({i: "available" for i in ids - found.keys() if i < oldest_listed})
        return found

    def _learn_all(self) -> None:
        """Fold the round's finished actions' own durations (the API's stamps, one clock) into the learned
        averages: one fold per command of the round's mean, not a read and a write per action."""
        learned, self._learned = self._learned, []
        durations = self.engine.durations
        if durations is None:
            return
        by_command: dict[str, list[float]] = {}
        for action in learned:
            begin, end = parse_time(action.get("started")), parse_time(action.get("finished"))
            if begin is not None and end is not None and action.get("command"):
                by_command.setdefault(str(action["command"]), []).append(end - begin)
        for command, seconds in by_command.items():
            durations.observe(command, sum(seconds) / len(seconds))

    # -- effects ---------------------------------------------------------------------------------------

    def _force(self, wait: Wait, effect: ForceOff, report: RoundReport) -> Wait | None:
        """Start the fallback for a guest that ignored the ACPI signal, as a part of the same step."""
        now = self.engine.clock()
        try:
            started = start_action(
                self.engine,
                ACTIONS[effect.action],
                wait.server_id,
                {},
                wait.id + ":force",
                after=wait.action_id,
            )
        except (Blocked, StepInProgress, RateBudgetExhausted):
            parked = replace(wait, next=now + max(MIN_PAUSE, self.engine.cadence.first))
            self._park(parked)
            return parked
        except HcloudFlowError as exc:
            self._finish(wait, Fail(exc))
            return None
        log.warning(
            "server %s ignored the ACPI signal of step %s for %.0f s; forcing it with %s (action %s)",
            wait.server_id,
            wait.step,
            wait.grace,
            effect.action,
            started.action["id"],
        )
        report.forced += 1
        report.requests += 1
        parked = after_force(wait, started.action, now)
        self._park(parked)
        return parked

    def _finish(self, wait: Wait, effect: Effect) -> None:
        """End a wait beside the rest of its round (every wait is decided inside one: see _round)."""
        if self._ending is None:
            raise RuntimeError("a wait ends only inside a monitor round")
        self._parking.pop(wait.id, None)  # polled earlier this round (its state read), ending now
        self._progress.pop(wait.id, None)
        self._ending.submit(wait, effect)

    def _park(self, wait: Wait) -> None:
        """Park a wait to be polled again, with the round's others at its end."""
        self._parking[wait.id] = wait

    def _park_all(self) -> None:
        parking, self._parking = self._parking, {}
        progress, self._progress = self._progress, {}
        if not parking and not progress:
            return
        pipe = self.engine.redis.pipeline()
        for wait in parking.values():
            self.engine.waits.stage_park(pipe, wait)
        for step_key, value in progress.items():
            self.engine.ledger.stage_update(pipe, step_key, progress=value)
        pipe.execute()

    @staticmethod
    def _count(report: RoundReport, outcome: str | None) -> None:
        if outcome is not None:
            setattr(report, outcome, getattr(report, outcome) + 1)

    def _end(self, wait: Wait, effect: Effect) -> str | None:
        """End one wait: dispatch its outcome and forget it; return the report's counter to raise."""
        engine = self.engine
        if isinstance(effect, Succeed):
            result = {**wait.result, **effect.extra, "status": "success"}
            result["seconds"] = round(engine.clock() - wait.started, 3)
            goes_on = bool(wait.request.get("chain"))
            pipe = engine.redis.pipeline()
            engine.ledger.stage_update(pipe, wait.id, status="success", progress=100)
            if goes_on:
                # A hand-off watch until the next step starts (it removes this wait) and sends it again if it
                # never does: Redis hands a message out before kombu records it as unacknowledged, so a worker
                # killed in between loses it. Parked before the send, so the next step always finds it.
                due = engine.clock() + HANDOFF_AFTER
                engine.waits.stage_park(pipe, replace(wait, phase=Phase.HANDOFF, next=due, result=result))
            pipe.execute()
            # Dispatch, then forget: a crash in between re-dispatches, and the next step's ledger turns the
            # duplicate into a re-attach instead of a second action.
            self.dispatcher.succeed(wait.request, result)
            if self.on_end is not None and wait.phase is not Phase.HANDOFF:
                self.on_end(wait, True)
            if goes_on:
                return "succeeded"
            outcome: str | None = "succeeded"
        elif isinstance(effect, Fail):
            log.warning("step failed: %s", effect.error)
            engine.ledger.update(wait.id, status="failed")
            self.dispatcher.fail(wait.request, effect.error, wait.run_id)
            outcome = "failed"
            if self.on_end is not None:
                self.on_end(wait, False)
        elif isinstance(effect, Resend):
            # Send first, then forget: a crash in between sends twice, and the step's claim and ledger make
            # the second delivery harmless; the other order could lose the step.
            self.dispatcher.resend(wait.request)
            outcome = "resent"
        else:
            outcome = None
        engine.waits.remove(wait.id)
        return outcome

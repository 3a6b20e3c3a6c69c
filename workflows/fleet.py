"""Fleet jobs: one workflow over many servers, driven by run endings rather than by a waiting process.

A job record (``hf:job:<id>``) holds the selector, the servers it resolved to at start, the limits, and one
field per server with its run id and outcome. The job advances whenever one of its runs ends (a run
listener), under a short per-job lock: it records the outcome and starts what ``fleet_plan.decide`` allows.
That counter in Redis is the fan-in; no Celery chord is involved, and no process sits waiting.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError

from workers.client import HcloudClient
from workers.errors import APIError, BadInput, HcloudFlowError, NotFound, RateBudgetExhausted, ServerBusy
from workers.ids import is_id
from workers.labels import check_selector
from workers.projects import DEFAULT_PROJECT
from workers.retry_policy import should_retry
from workers.user_data import fingerprint

from .fleet_gates import Gates
from .fleet_plan import GATES, JOB_CONTROLS, Decision, decide, parse_amount
from .gates import Probe, http_probe, probe_health
from .job_store import JOB_FINAL, JobStore
from .specs import FleetSpec, checked
from .validate import Lookups, check_submitter, find_server, gather_facts, workflow_named

__all__ = ["FleetRunner", "JobStore", "resolve_targets"]

log = logging.getLogger(__name__)
# Up to this many servers named one by one are looked up singly; more, through the server list.
_LIST_BELOW = 5
# Per process: the server objects each job listed last, and when (FleetRunner.fresh_for says how long
# they may serve).
_SEEN: dict[str, tuple[float, dict[int, dict[str, Any]]]] = {}
# A run still queued this long after it was recorded, while its server is held for it, lost its first
# message: it is sent again; three times this long, and it has failed.
ORPHAN_AFTER = 20.0
# Seconds between renewals of a job's lock while a wave is submitted: well inside its 30 s timeout.
LOCK_RENEW_EVERY = 5.0
# After an advance whose job lock lapsed under it: the next look at the job, this soon.
LOCK_LAPSED_RETRY = 1.0
# An advance of a running job first asks for another this long after (later than the job lock's 30 s TTL,
# so a dead holder's lock has lapsed by then): fleet_start and fleet_advance are acknowledged as they are
# received, and a worker killed mid-wave left its job "running" with nothing to wake it, a drained server
# out of its load balancer (an outside test). Asked through ``watch``, whose deferred entry is not the
# job's kick entry: one entry keeps only its earliest ask, and the watch had displaced a window-end kick
# and, in a race, a due health look (a reviewer). Each advance asks again: a running job is looked at at
# least this often.
WATCH_AFTER = 60.0
# A server whose start met an API that could not answer (5xx, no answer, through all of a request's
# retries) is tried again after this pause, at most this many times, before it counts as refused.
START_RETRY_PAUSE = 30.0
START_TRIES = 5


def resolve_targets(client: HcloudClient, selector: Any, servers: Any) -> list[dict[str, Any]]:
    """Return the servers a label selector or an id/name list names, in a stable order; refuse empties."""
    if (selector is None) == (servers is None):
        raise BadInput("give exactly one of selector or servers", "selector")
    if selector is not None:
        selector = check_selector(selector)
        try:
            found = client.list_servers(label_selector=selector)
        except APIError as exc:
            if exc.code == "invalid_input":
                raise BadInput(
                    f"the API refused the label selector {selector!r}: {exc.message}", "selector"
                ) from exc
            raise
        if not found:
            raise BadInput(f"the label selector {selector!r} matches no server", "selector")
        return sorted(found, key=lambda s: int(s["id"]))
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not servers:
        raise BadInput("servers must be a non-empty list of server ids or names", "servers")
    refs = [int(r) if is_id(r) else r for r in servers]
    if len(refs) <= _LIST_BELOW:
        found = [find_server(client, ref) for ref in refs]
    else:
        # One listing (50 servers a request) instead of a request per server.
        known = client.list_servers()
        by_ref = {**{s["id"]: s for s in known}, **{s["name"]: s for s in known}}
        missing = [r for r in refs if r not in by_ref]
        if missing:
            what = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise BadInput(f"no server with these ids or names in this project: {what}", "servers")
        found = [by_ref[r] for r in refs]
    named: dict[int, list[Any]] = {}
    for ref, server in zip(refs, found, strict=True):
        named.setdefault(int(server["id"]), []).append(ref)
    twice = next((refs for refs in named.values() if len(refs) > 1), None)
    if twice is not None:
        # Dropped without a word, a list of 40 ran 39 servers (an outside test counted them).
        shown = " and ".join(repr(r) if isinstance(r, str) else str(r) for r in twice[:3])
        raise BadInput(f"servers names one server more than once ({shown}); name each once", "servers")
    return found


def _user_data_again(job: dict[str, Any], params: dict[str, Any], given: Any) -> dict[str, Any]:
    """Return the params a retry of ``job`` starts with: its user data as given again, where the job now
    keeps only its fingerprint. Refuse text that is not the job's, and a retry that would rebuild with the
    fingerprint itself as cloud-init."""
    kept = params.get("user_data")
    forgotten = bool(job.get("user_data_forgotten")) and kept is not None
    if given is None:
        if forgotten:
            raise BadInput(
                f"job {job['id']} kept only the fingerprint of its user data ({kept}) once it had no server "
                "left to start; give the same text again to retry it (--user-data @FILE)",
                "user_data",
            )
        return params
    if not isinstance(given, str) or not given:
        raise BadInput("user_data must be the job's user data, as text", "user_data")
    if kept is None:
        raise BadInput(f"job {job['id']} had no user data; retry it without", "user_data")
    theirs = kept if forgotten else fingerprint(kept)
    if fingerprint(given) != theirs:
        raise BadInput(
            f"this user data is not job {job['id']}'s: its fingerprint is {fingerprint(given)}, the job's "
            f"{theirs}",
            "user_data",
        )
    return {**params, "user_data": given}


class FleetRunner(Gates):
    """Start, advance, pause, resume and cancel fleet jobs; ``submit`` starts one server's run. Its gates
    (approval, blocks, health checks, drain, spread limits, pre-flight) are ``fleet_gates.Gates``."""

    def __init__(
        self,
        store: JobStore,
        client: HcloudClient,
        submit: Callable[..., dict[str, Any]],
        cancel_run: Callable[[str, str | None], Any],
        kick: Callable[[str, float], Any] | None = None,
        watch: Callable[[str, float], Any] | None = None,
        run_store: Any = None,
        restart: Callable[[dict[str, Any]], Any] | None = None,
        starters: int = 8,
        fresh_for: float = 10.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        probe: Probe = http_probe,
        recheck: float = 15.0,
        look: Callable[[str], tuple[bool, str]] = probe_health,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        self.project = project  # the project ``client`` and ``submit`` act in; its jobs name it
        self.look = look  # one look at a server's health-check URL (workflows.gates)
        self._lb_cache: dict[int, dict[str, Any]] = {}  # load balancers read in this pass (drain)
        self.probe = probe  # looks at a --block-on URL (workflows.gates)
        self.recheck = recheck  # seconds between looks while a block URL holds new starts back
        self.on_event = on_event  # told "job.started" and "job.ended" with the job record (notifications)
        self.starters = starters  # runs of one wave submitted at once
        self.fresh_for = fresh_for  # seconds a listed server object may validate a later start
        self.restart = restart  # sends a recorded run's chain again (workers.runs.RunHooks.start)
        self.store = store
        self.run_store = run_store  # reads the run holding a server (workers.run_store.RunStore)
        self.client = client
        self.submit = submit
        self.cancel_run = cancel_run
        # Asks for ``advance(job_id)`` again after a delay: used when the rate budget, not the job's rules,
        # stops the next start (otherwise a job with nothing in flight would have nothing to wake it).
        self.kick = kick
        self.watch = watch  # asks for the next look at a running job (WATCH_AFTER; None in most unit tests)

    def start(
        self,
        *,
        window: dict[str, Any] | None = None,
        submitted_by: str | None = None,
        retry_of: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Validate a fleet job (``plan``'s keywords), record it with its resolved servers, start its runs.

        ``submitted_by`` (a user@host, a service, an API key's name, a window) is recorded with the job and
        with each of its runs.
        """
        submitter = check_submitter(submitted_by)
        plan = self.plan(**options)
        job_id = uuid.uuid4().hex[:12]
        meta = {
            "id": job_id,
            "workflow": plan["workflow"],
            "project": self.project,
            "selector": options.get("selector"),
            "params": plan["params"],
            "servers": [
                {
                    "id": s["id"],
                    "name": s["name"],
                    "location": (s.get("location") or {}).get("name"),
                    "placement_group": (s.get("placement_group") or {}).get("id"),
                    "ipv4": ((s.get("public_net") or {}).get("ipv4") or {}).get("ip"),
                    "lbs": [m["lb"] for m in plan["drain"].get(int(s["id"]), [])],
                }
                for s in plan["servers"]
            ],
            "max_per_placement_group": plan["max_per_placement_group"],
            "max_per_location": plan["max_per_location"],
            "health": plan["health"],
            "spec": plan["spec"],  # what it was asked, for `job retry`
            "retry_of": retry_of,
            "drain": bool(plan["drain"]),
            "max_concurrency": plan["max_concurrency"],
            "max_errors": plan["max_errors"],
            "canary": plan["canary"],
            "limits": plan["limits"],
            "notify": plan["notify"],
            "gates": plan["gates"],
            "block_on": plan["block_on"],
            "approval_timeout": plan["approval_timeout"],
            "created": self.store.clock(),
            "window": window,
            "submitted_by": submitter,
        }
        self.store.create(meta)
        self._tell("job.started", job_id)
        if window and window.get("ends_at") and self.kick is not None:
            # Woken at the window's end: a job still running then is told of as "window.overran".
            self.kick(job_id, max(0.0, float(window["ends_at"]) - self.store.clock()) + 0.5)
        # The first wave starts now, on the server objects the plan just read: no second listing.
        self.advance(job_id, Lookups(servers={int(s["id"]): s for s in plan["servers"]}))
        job = self.store.get(job_id)
        if job is None:  # it was an AssertionError and a traceback (an outside test)
            raise HcloudFlowError(
                f"fleet job {job_id}: its record is gone from Redis as it started (did Redis restart without "
                "its data?); runs it started may be under way on their servers"
            )
        return job

    def _tell_ended(self, job_id: str, tally: tuple[str, dict[str, int]] | None = None) -> None:
        """Tell "job.ended" once, when the job is over: in a final state with none of its runs in flight (a
        cancelled job's runs stop only before their next step, and the event carries how they ended).
        ``tally`` is the job's (``JobStore.tally``) when the caller has just read it."""
        tally = tally or self.store.tally(job_id)
        if tally is None or tally[0] not in JOB_FINAL or tally[1].get("running"):
            return
        if self.store.claim_told(job_id, "job.ended"):
            self._tell("job.ended", job_id)

    def _tell(self, event: str, job_id: str) -> None:
        if self.on_event is None:
            return
        job = self.store.get(job_id)
        if job is not None:
            try:
                self.on_event(event, job)
            except Exception:  # telling must never stop the job
                log.exception("fleet job %s: could not send %s", job_id, event)

    def plan(self, **options: Any) -> dict[str, Any]:
        """Check everything a job needs (``FleetSpec``'s fields) and return its plan, changing nothing."""
        spec = checked(FleetSpec, options)
        if spec.project not in (None, self.project):
            # A job never mixes projects: its servers, runs and budget are all of one.
            raise BadInput(f"this runner acts in project {self.project!r}, not {spec.project!r}", "project")
        wf = workflow_named(spec.workflow)
        conc = parse_amount(spec.max_concurrency, "max_concurrency", minimum=1)
        errs = parse_amount(spec.max_errors, "max_errors", minimum=0)
        canary, clean = spec.canary, spec.params
        selector, servers = spec.selector, spec.servers
        targets = resolve_targets(self.client, selector, servers)
        if canary > len(targets):
            raise BadInput(f"canary {canary} is more than the {len(targets)} servers selected", "canary")
        # Image, ssh keys and the like are the same for every server: check them once, up front.
        facts = gather_facts(
            self.client, wf, targets[0]["id"], clean, Lookups(servers={targets[0]["id"]: targets[0]})
        )
        self._preflight(facts, targets)
        drained = self._drain_plan(wf, spec.drain, targets)
        return {
            "workflow": wf.name,
            "params": clean,
            "servers": targets,
            "max_concurrency": conc.of(len(targets), at_least=1),
            "max_errors": errs.of(len(targets)),
            "canary": canary,
            "notify": spec.notify,
            "gates": [gate for gate, (flag, _) in GATES.items() if getattr(spec, flag)],
            "block_on": spec.block_on,
            "spec": spec.model_dump(mode="json"),
            "drain": drained,
            "drain_skipped": spec.drain and not wf.disruptive,
            "max_per_placement_group": spec.max_per_placement_group,
            "max_per_location": spec.max_per_location,
            "health": None
            if spec.health_check is None
            else {"check": spec.health_check, "timeout": spec.health_timeout, "settle": spec.health_settle},
            "approval_timeout": spec.approval_timeout,
            "limits": {"max_concurrency": str(conc), "max_errors": str(errs)},
            "facts": facts,
        }

    def advance(self, job_id: str, fresh: Lookups | None = None) -> None:
        """Start whatever the rules allow now, and end the job when nothing is left to start or wait for.

        ``fresh`` holds server objects read a moment ago (by the plan of a job starting now).
        """
        try:
            with self.store.lock(job_id) as lock:
                self._advance(job_id, lock, fresh)
        except LockNotOwnedError:
            # The lock lapsed while we held it (a stalled process): another advance may have run meanwhile,
            # or none did, and nothing would have looked at the job again: it stalled for good (an outside
            # test, behind a block-on URL that answered slowly). One more look settles it either way.
            log.warning("fleet job %s: the job lock lapsed during a wave; looking again", job_id)
            if self.kick is not None:
                self.kick(job_id, LOCK_LAPSED_RETRY)
        except LockError:
            # Not had within its wait: another advance holds it, long. This look (perhaps the watch's) must
            # not end the job's looks: if that holder then dies, nothing else would ask (a reviewer).
            log.warning("fleet job %s: the job lock stayed held; looking again later", job_id)
            if not self._watch(job_id) and self.kick is not None:
                self.kick(job_id, LOCK_LAPSED_RETRY)

    def _advance(self, job_id: str, lock: Any, fresh: Lookups | None = None) -> None:
        swept = False
        while True:
            job = self.store.get(job_id)
            # At a gate, or paused at one: the gate's deadline holds either way.
            if job is not None and job.get("approval") and job["state"] in ("awaiting_approval", "paused"):
                self._expire_approval(job)
                return
            if job is not None and job["state"] in JOB_FINAL and job["counts"].get("running"):
                # Cancelled with runs in flight: their ends are the job's last word (job.ended). Settle those
                # a crash or a lost first message left unreported, and look again while any is left.
                self._sweep(job)
                self._tell_ended(job_id)
                return
            if job is None or job["state"] != "running":
                return
            if not swept:
                swept = True
                self._watch(job_id)
                self._kick_for_retries(job)
                if self._sweep(job) | self._tend_drains(job) | self._check_health(job):
                    continue  # outcomes changed: decide on the fresh record
            d = self._decide(job)
            self._note_stops(job, d)
            if d.state == "awaiting_approval":
                self._await_approval(job, d)
                return
            if not d.start:
                for sid in d.not_started:
                    self.store.set_outcome(job_id, sid, outcome="not_started", reason=d.reason)
                if self.store.holds_user_data(job) and (d.state != "running" or self._all_started(job)):
                    self.store.forget_user_data(job_id)  # no server is left to start with it (README)
                if d.state != "running":
                    self.store.set_state(job_id, d.state, d.reason)
                    log.info("fleet job %s %s%s", job_id, d.state, f" ({d.reason})" if d.reason else "")
                    self._tell_ended(job_id)
                return
            if self._blocked(job):
                return
            try:
                lookups = fresh if fresh is not None else self._wave_lookups(job, d.start)
                fresh = None  # one wave only: later waves read their servers again
            except RateBudgetExhausted as exc:
                if self.kick is None:
                    raise
                self.kick(job["id"], min(max(exc.wait, 1.0), 30.0))
                return
            if not self._start_wave(job, d.start, lookups, lock):
                return

    def _all_started(self, job: dict[str, Any]) -> bool:
        """Tell whether every server of the job has had its run submitted, or will never have one: none is
        pending, draining before its run, or waiting to try its start again."""
        outcomes = job["outcomes"]
        return not self._waiting(job) and all(
            (entry := outcomes.get(int(s["id"]))) is not None
            and (entry["outcome"] != "running" or bool(entry.get("run_id")))
            for s in job["servers"]
        )

    def _watch(self, job_id: str) -> bool:
        """Ask for the next look at a running job, before anything a crash could cut short (WATCH_AFTER);
        False when there is no one to ask."""
        if self.watch is None:
            return False
        self.watch(job_id, WATCH_AFTER)
        return True

    def _kick_for_retries(self, job: dict[str, Any]) -> None:
        """Ask for an advance at the first retry time still ahead. At every advance: the job's one deferred
        entry keeps only the earliest kick, so one made sooner (a health look, the budget) had replaced the
        retry's, and a job whose last runs had ended then waited for good (a reviewer)."""
        waiting = self._waiting(job)
        if waiting and self.kick is not None:
            self.kick(job["id"], max(0.0, min(waiting.values()) - self.store.clock()))

    def _decide(self, job: dict[str, Any]) -> Decision:
        """Return what the job's rules say now, from its record."""
        window = job.get("window") or {}
        return decide(
            [s["id"] for s in job["servers"]],
            {sid: e["outcome"] for sid, e in job["outcomes"].items()},
            window=job["max_concurrency"],
            max_errors=job["max_errors"],
            canary=job["canary"],
            cutoff_passed=bool(window.get("cutoff_at")) and self.store.clock() >= window["cutoff_at"],
            closed=frozenset(job.get("gates") or ()) - set(job.get("approved") or {}),
            spread=self._spread(job),
            waiting=frozenset(self._waiting(job)),
        )

    def _wave_lookups(self, job: dict[str, Any], start: tuple[int, ...]) -> Lookups:
        """Return the wave's server objects read at most ``fresh_for`` seconds ago, 50 a request.

        A job held back by its concurrency or the budget starts its servers one or two at a time as runs
        end: read one by one, those reads were a quarter of a throttled job's requests. So a listing reads
        every server the job has still to start, and later small waves take theirs from it while it is fresh
        (the first step's own POST still meets the API's refusal of a server changed meanwhile). Where the
        list is longer than the servers left to start, they are read one by one as before.
        """
        now = self.store.clock()
        read_at, seen = _SEEN.get(job["id"], (0.0, {}))
        if now - read_at <= self.fresh_for and set(start) <= seen.keys():
            return Lookups(servers={sid: seen[sid] for sid in start})
        pending = {int(s["id"]) for s in job["servers"] if int(s["id"]) not in job["outcomes"]} | set(start)
        if len(pending) < _LIST_BELOW or (len(start) < _LIST_BELOW and self.fresh_for <= 0):
            return Lookups()
        params = [("label_selector", job["selector"])] if job.get("selector") else []
        found: dict[int, dict[str, Any]] = {}
        with self.client.priority_scope("bulk"):
            page: int | None = 1
            while page:
                servers, pagination = self.client.server_page(params, page)
                found.update({int(s["id"]): s for s in servers if int(s["id"]) in pending})
                last = pagination.get("last_page")
                if page == 1 and last is not None and int(last) > len(pending):
                    break  # a big project and few servers left: cheaper to read those alone
                nxt = pagination.get("next_page")
                page = int(nxt) if nxt and not pending <= found.keys() else None
        _SEEN[job["id"]] = (now, found)
        for stale in [k for k, (t, _) in _SEEN.items() if now - t > max(self.fresh_for, 60.0)]:
            _SEEN.pop(stale, None)
        return Lookups(servers={sid: found[sid] for sid in start if sid in found})

    def _start_wave(
        self, job: dict[str, Any], start: tuple[int, ...], lookups: Lookups | None, lock: Any
    ) -> bool:
        """Start a wave's runs, several at once; False when the budget said to try some again later.

        A start waits mostly on Redis and the broker (record, server lock, first message): one after the
        other, a 100-server wave spread its first POSTs over a second, and every later step inherits that.
        """
        # The first start alone: it reads what every run shares (the image, ssh keys) into ``lookups``, once.
        if not self._start_one(job, start[0], lookups):
            return False
        lock.reacquire()  # each submit renews the job lock: it lapses only with its holder
        rest = start[1:]
        if not rest:
            return True
        ok = True
        renewed = time.monotonic()
        with cf.ThreadPoolExecutor(max_workers=max(1, min(self.starters, len(rest)))) as pool:
            for done in cf.as_completed([pool.submit(self._start_one, job, sid, lookups) for sid in rest]):
                ok = done.result() and ok
                # In this thread, which holds the lock (its token is thread-local); every few seconds, not
                # after every start: a round trip per start was a third of a 100-server wave's time.
                if time.monotonic() - renewed > LOCK_RENEW_EVERY:
                    lock.reacquire()
                    renewed = time.monotonic()
        return ok

    def _start_one(self, job: dict[str, Any], sid: int, lookups: Lookups | None = None) -> bool:
        """Start one server's run and record the outcome; False when the budget says to try again later.

        A server to drain is first taken out of its load balancers; its run starts once that is done.
        """
        lbs = self._lbs(job, sid)
        if lbs:
            drain = self._drain_entry("draining", lbs)
            self.store.set_outcome(job["id"], sid, outcome="running", drain=drain)  # before the requests
            return self._drain_step(job, sid, drain, lookups)
        return self._submit_one(job, sid, lookups)

    def _submit_one(
        self,
        job: dict[str, Any],
        sid: int,
        lookups: Lookups | None = None,
        drain: dict[str, Any] | None = None,
    ) -> bool:
        """Submit one server's run and record the outcome; a drained server refused is put back."""
        final: dict[str, Any] | None = None
        try:
            answer = self.submit(
                workflow=job["workflow"],
                server=sid,
                params=job["params"],
                job_id=job["id"],
                priority="bulk",
                lookups=lookups,
                submitted_by=job.get("submitted_by"),
            )
            self.store.set_outcome(
                job["id"], sid, outcome="running", run_id=answer["run_id"], started=self.store.clock()
            )
        except RateBudgetExhausted as exc:
            if self.kick is None:
                raise
            self._drain_again(job, sid, drain)
            self.kick(job["id"], min(max(exc.wait, 1.0), 30.0))
            return False
        except ServerBusy as exc:
            if self._ours(job["id"], exc.run_id):
                # Our own earlier start of this server, whose outcome a crash kept us from recording; look
                # again later in case that start itself was lost (see _sweep).
                self.store.set_outcome(job["id"], sid, outcome="running", run_id=exc.run_id)
                if self.kick is not None:
                    self.kick(job["id"], ORPHAN_AFTER + 1.0)
            else:
                final = {"outcome": "skipped", "reason": str(exc), "busy_with": exc.run_id}
        except BadInput as exc:
            final = {"outcome": "refused", "reason": str(exc)}
        except HcloudFlowError as exc:
            retry_at = self.store.clock() + START_RETRY_PAUSE
            if (
                self.kick is not None
                and should_retry(exc, idempotent=True)
                and self.store.note_start_try(job["id"], sid, retry_at) < START_TRIES
            ):
                # The API could not answer through all of the request's retries (about 18 s): a gateway
                # blip refused the server, and failed a --max-errors 0 job (an outside test). It is tried
                # again from retry_at; the rest of the job goes on meanwhile.
                self._drain_again(job, sid, drain)
                self.kick(job["id"], START_RETRY_PAUSE)
                return True
            final = {"outcome": "refused", "reason": f"could not submit: {exc}"}
        if final is not None and drain is not None:
            self._put_back(job, sid, drain, final)
        elif final is not None:
            self.store.set_outcome(job["id"], sid, **final)
        return True

    def _sweep(self, job: dict[str, Any]) -> bool:
        """Settle servers whose run a crash left unreported; return True if an outcome changed.

        A run that ended while the process telling the job died is recorded as it ended. A run recorded
        and holding its server whose first step has not started may have lost its first message: after
        ``ORPHAN_AFTER`` it is sent again from its record (same task ids: a late original is harmless);
        after three times that it fails with that reason and frees the server, instead of the job waiting
        on it forever. While any run has not started, the job asks to look again.
        """
        if self.run_store is None:
            return False
        changed = starting = False
        now = self.store.clock()
        for sid, entry in job["outcomes"].items():
            if entry["outcome"] != "running" or not entry.get("run_id"):
                continue
            if entry.get("health") or (entry.get("drain") or {}).get("state", "out") != "out":
                continue  # its run's end was recorded: it is being put back or health-checked
            run = self.run_store.get(entry["run_id"], live=False)
            if run is None:
                continue
            age = now - float(run["created"])
            if run["state"] in ("succeeded", "failed", "cancelled") and run.get("notified"):
                # Its end was never told to the job (the telling process died): as if it just ended.
                self._record_end(job, {**run, "job_id": job["id"]})
                changed = True
            elif run["state"] == "cancelling" and not run.get("started"):
                # Cancelled before its first step began, whose message was lost (a dead worker): nothing ran
                # and nothing will, so it ends here; a late message meets the cancel and posts nothing.
                starting = True
                if age > ORPHAN_AFTER:
                    self.run_store.set_state(run["id"], "cancelled", finished=now)
                    self.run_store.release(run["server_id"], run["id"])
                    reason = "cancelled before its first step began"
                    self.store.set_outcome(
                        job["id"], sid, outcome="cancelled", run_id=run["id"], reason=reason
                    )
                    changed = True
            elif run["state"] == "queued" and age > 3 * ORPHAN_AFTER:
                reason = "its start was lost with the worker that submitted it; submit it again"
                self.run_store.set_state(
                    run["id"], "failed", finished=now, error={"type": "Lost", "message": reason}
                )
                self.run_store.release(run["server_id"], run["id"])
                self.store.set_outcome(job["id"], sid, outcome="failed", run_id=run["id"], reason=reason)
                changed = True
            elif run["state"] == "queued":
                starting = True
                if age > ORPHAN_AFTER and run.get("chain") and self.restart is not None:
                    log.warning(
                        "fleet job %s: the start of run %s was lost; sending it again", job["id"], run["id"]
                    )
                    self.restart(run)
        if starting and self.kick is not None:
            self.kick(job["id"], ORPHAN_AFTER + 1.0)
        return changed

    def _ours(self, job_id: str, run_id: str) -> bool:
        """Tell whether the run holding a server is one this job started."""
        run = self.run_store.get(run_id, live=False) if self.run_store is not None else None
        return run is not None and run.get("job_id") == job_id

    def on_run_ended(self, run: dict[str, Any]) -> None:
        """Record a job's run outcome and let the job move on (a run listener)."""
        job_id = run.get("job_id")
        if not job_id:
            return
        job = self.store.brief(job_id, int(run["server_id"]))
        if job is None:
            return
        if job.get("health") or (job["outcomes"].get(int(run["server_id"])) or {}).get("drain"):
            job = self.store.get(job_id)  # putting a server back or checking its health reads the whole job
            if job is None:
                return
        if not self._record_end(job, run):
            return  # not done yet: its drain or health check goes on, woken by the job's kicks
        # Most runs of a big job end while others still run and none waits to start: then there is nothing
        # to decide, and taking the job lock (and sweeping) for each would queue the last runs' endings
        # behind one another. The outcome is written before this read, so the last run to end always sees
        # every outcome final and ends the job; two that end together both advance, under the lock, once.
        tally = self.store.tally(job_id)
        if tally is None:
            return
        state, counts = tally
        running = counts.get("running", 0)
        if state in JOB_FINAL and not running:
            # Ended (cancelled) while runs were in flight: the job is over only now, with the last of them,
            # and its record and its "job.ended" say so.
            self.store.note_finished(job_id)
            self._tell_ended(job_id, tally)
        if state != "running" or (running and sum(counts.values()) == len(job["servers"])):
            return  # every server has started and some still run: nothing to start, nor to end yet
        job = self.store.get(job_id)
        if job is None or job["state"] != "running":
            return
        d = self._decide(job)
        if d.start or d.state != "running" or d.not_started:
            self.advance(job_id)

    def _record_end(self, job: dict[str, Any], run: dict[str, Any]) -> bool:
        """Record how a server's run ended; True if that is the server's outcome, False if the server is
        not done yet: it goes back into its load balancers first (drain), or its health check starts."""
        job_id, sid, now = job["id"], int(run["server_id"]), self.store.clock()
        entry: dict[str, Any] = {"outcome": run["state"], "run_id": run["id"], "ended": now}
        if run.get("error"):
            entry["reason"] = run["error"].get("message")
        drain = (job["outcomes"].get(sid) or {}).get("drain")
        if drain and drain.get("state") == "out":
            then: dict[str, Any] = {k: entry[k] for k in ("outcome", "reason") if k in entry}
            self.store.set_outcome(job_id, sid, run_id=run["id"], ended=now)
            if job["state"] in JOB_FINAL:  # cancelled meanwhile: back in at once, not waited for
                self._put_back_now(job, sid, drain, then)
                return True
            self._put_back(job, sid, drain, then)
            # Back already (healthy at once, or not waited for): its outcome is final now, and the job may
            # have something to decide; otherwise the job's kicks carry the drain on.
            brief = self.store.brief(job_id, sid)
            return brief is not None and (brief["outcomes"].get(sid) or {}).get("outcome") != "running"
        if job.get("health") and run["state"] == "succeeded" and job["state"] not in JOB_FINAL:
            # Not done yet: in flight (still counted against max_concurrency) until its health check says.
            self._start_health_check(job, sid, **{**entry, "outcome": "running"})
            return False
        ends_at = (job.get("window") or {}).get("ends_at")
        if ends_at and now > ends_at:
            entry["overran"] = True  # still running when its maintenance window closed
        self.store.set_outcome(job_id, sid, **entry)
        return True

    def retry(
        self,
        job_id: str,
        *,
        failed: bool = True,
        not_started: bool = False,
        by: str | None = None,
        user_data: Any = None,
    ) -> dict[str, Any]:
        """Start a new job over an ended job's failed (failed, refused) and/or not started (not_started,
        skipped as busy) servers, with the same workflow, parameters and options; linked both ways.

        ``user_data``: the job's own, given again once the job kept only its fingerprint (it does as soon as
        it has started its last server); refused unless its fingerprint is the job's.
        """
        if not isinstance(failed, bool) or not isinstance(not_started, bool):
            raise BadInput("failed and not_started must be true or false", "failed")
        if not (failed or not_started):
            raise BadInput("say which servers to retry: --failed, --not-started or both", "failed")
        if not isinstance(job_id, str):
            raise NotFound.record("fleet job", job_id, "job_id")
        with self.store.retrying(job_id) as took:
            if not took:
                # Two retries at once both started a job; the second's servers were all skipped as busy.
                raise BadInput(
                    f"job {job_id} is being retried right now; see `hcloud-flow job list`", "job_id"
                )
            return self._retry(job_id, failed, not_started, by, user_data)

    def _retry(
        self, job_id: str, failed: bool, not_started: bool, by: str | None, user_data: Any
    ) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound.record("fleet job", job_id, "job_id")
        if job["state"] not in JOB_FINAL:
            raise BadInput(f"job {job_id} is {job['state']}; retry it once it has ended", "job_id")
        if not job.get("spec"):
            raise BadInput(
                f"job {job_id} was started before jobs kept their options; start a new one", "job_id"
            )
        wanted = ({"failed", "refused"} if failed else set()) | (
            {"not_started", "skipped"} if not_started else set()
        )
        ended = [
            int(s["id"])
            for s in job["servers"]
            if (job["outcomes"].get(int(s["id"])) or {}).get("outcome") in wanted
        ]
        # A job keeps its own outcomes: a second retry ran again the servers the first had put right (an
        # outside test). Servers an earlier retry took are left to that job; the others may still be retried.
        earlier = job.get("retried_by") or []
        taken = {int(s["id"]) for rid in earlier for s in (self.store.get(rid) or {}).get("servers", [])}
        ids = [sid for sid in ended if sid not in taken]
        if not ids:
            what = " or ".join(sorted(wanted))
            if ended:
                raise BadInput(
                    f"job {job_id}'s servers that ended {what} were retried already, by job "
                    f"{', '.join(earlier)}: retry that one for what is left there",
                    "job_id",
                )
            raise BadInput(f"job {job_id} has no server that ended {what}; nothing to retry", "job_id")
        spec = {**job["spec"], "servers": ids, "selector": None}
        spec["params"] = _user_data_again(job, spec.get("params") or {}, user_data)
        spec["canary"] = min(int(spec.get("canary") or 0), len(ids))
        new = self.start(submitted_by=check_submitter(by, "by"), retry_of=job_id, **spec)
        self.store.note_retry(job_id, new["id"])
        return new

    def pause(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        job = self._active(job_id, "pause")
        if job["state"] == "paused":
            raise BadInput(f"job {job_id} is already paused", "job_id")
        self.store.note_control(job_id, "pause", check_submitter(by, "by"))
        self.store.set_state(job_id, "paused")
        return {"job_id": job_id, "state": "paused"}

    def resume(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        job = self._active(job_id, "resume")
        if job["state"] != "paused":
            raise BadInput(f"job {job_id} is {job['state']}, not paused", "job_id")
        self.store.note_control(job_id, "resume", check_submitter(by, "by"))
        self.store.set_state(job_id, "running")
        self.advance(job_id)
        return {"job_id": job_id, "state": self.store.get(job_id)["state"]}  # type: ignore[index]

    def cancel(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        """Start nothing new and cancel the runs in flight before their next step."""
        job = self._active(job_id, "cancel")
        who = check_submitter(by, "by")
        self.store.note_control(job_id, "cancel", who)
        self._end_cancelled(job, f"cancelled by {who}" if who else "cancelled by request", who)
        return {"job_id": job_id, "state": "cancelled"}

    def approve(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        """Open the gate a job awaits (recorded with who opened it) and let it go on."""
        job = self._awaiting(job_id, "approve")
        who = check_submitter(by, "by")
        self.store.note_control(job_id, "approve", who)
        self.store.approve(job_id, job["approval"]["gate"], who)
        self.advance(job_id)
        return {"job_id": job_id, "state": self.store.get(job_id)["state"]}  # type: ignore[index]

    def reject(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        """Cancel a job at its approval gate; the servers it did not reach are not_started."""
        job = self._awaiting(job_id, "reject")
        who = check_submitter(by, "by")
        self.store.note_control(job_id, "reject", who)
        self._end_cancelled(job, f"rejected by {who}" if who else "rejected", who)
        return {"job_id": job_id, "state": "cancelled"}

    def control(self, job_id: str, verb: str, by: str | None = None) -> dict[str, Any]:
        """Carry out one of ``JOB_CONTROLS`` on a job."""
        if not isinstance(verb, str) or verb not in JOB_CONTROLS:
            raise BadInput(f"verb must be one of {', '.join(JOB_CONTROLS)}, not {verb!r}", "verb")
        method: Callable[[str, str | None], dict[str, Any]] = getattr(self, verb)
        return method(job_id, by)

    def _end_cancelled(self, job: dict[str, Any], reason: str, who: str | None = None) -> None:
        job_id = job["id"]
        self.store.set_state(job_id, "cancelled", reason)
        if self.store.holds_user_data(job):
            self.store.forget_user_data(job_id)  # nothing more starts
        for sid, entry in job["outcomes"].items():
            drain = entry.get("drain") or {}
            if entry["outcome"] == "running" and drain.get("state") in ("draining", "restoring"):
                then = drain.get("then") or {"outcome": "cancelled", "reason": reason}
                self._put_back_now(job, sid, drain, then)
            elif entry["outcome"] == "running" and entry.get("health"):
                why = f"{reason} during its health check (its run succeeded)"
                self.store.set_outcome(job_id, sid, outcome="cancelled", reason=why)
            elif entry["outcome"] == "running":
                with contextlib.suppress(BadInput):  # it ended meanwhile
                    self.cancel_run(entry["run_id"], who)
        for server in job["servers"]:
            if server["id"] not in job["outcomes"]:
                self.store.set_outcome(job_id, server["id"], outcome="not_started", reason=reason)
        tally = self.store.tally(job_id)
        self._tell_ended(job_id, tally)  # now, or with the last of its runs in flight (on_run_ended)
        if self.kick is not None and tally is not None and tally[1].get("running"):
            self.kick(job_id, ORPHAN_AFTER + 1.0)  # a run whose start was lost must not hold the end forever

    def _awaiting(self, job_id: str, verb: str) -> dict[str, Any]:
        job = self._active(job_id, verb)
        if job["state"] == "paused" and job.get("approval"):
            raise BadInput(
                f"job {job_id} is paused at its approval gate: resume it first, then {verb}", "job_id"
            )
        if job["state"] != "awaiting_approval":
            state = job["state"]
            raise BadInput(f"job {job_id} is {state}, not awaiting approval; nothing to {verb}", "job_id")
        return job

    def _active(self, job_id: str, verb: str) -> dict[str, Any]:
        job = self.store.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFound.record("fleet job", job_id, "job_id")
        if job["state"] in JOB_FINAL:
            raise BadInput(f"job {job_id} already ended ({job['state']}); nothing to {verb}", "job_id")
        return job

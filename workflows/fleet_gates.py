"""The gates of a fleet job, mixed into ``FleetRunner``: pre-flight checks, spread limits, approval,
alert blocks, health checks, load-balancer drain, and the events they tell.

Each gate's rule is a pure function elsewhere (``fleet_plan``, ``gates``, ``drain``); these methods are the
I/O around them: reading the job record, asking the API or a URL, writing what was decided, and asking to
be woken again (``kick``) while something is awaited. Nothing here sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from workers.errors import BadInput

from .drain import Drainer, memberships, refuse_selector_targets, safely
from .fleet_plan import GATES, Decision, Spread
from .gates import PROBE_TIMEOUT, Probe, first_block, health_url, health_verdict, look_all
from .validate import Lookups, check_fits

if TYPE_CHECKING:
    from workers.client import HcloudClient

    from .job_store import JobStore

__all__ = ["DRAIN_EVERY", "DRAIN_TIMEOUT", "Gates"]

log = logging.getLogger(__name__)
# A drain step (out of, or back into, the load balancers and healthy there) fails past this many seconds;
# its requests are looked at again this often meanwhile.
DRAIN_TIMEOUT = 300.0
DRAIN_EVERY = 2.0


class Gates:
    """Mixed into ``FleetRunner``: the gates between a job's rules and its servers' runs."""

    if TYPE_CHECKING:  # what the mixin uses of FleetRunner
        store: JobStore
        client: HcloudClient
        kick: Callable[[str, float], Any] | None
        on_event: Callable[[str, dict[str, Any]], None] | None
        probe: Probe
        recheck: float
        look: Callable[[str], tuple[bool, str]]
        _lb_cache: dict[int, dict[str, Any]]

        def _tell(self, event: str, job_id: str) -> None: ...
        def _decide(self, job: dict[str, Any]) -> Decision: ...
        def _end_cancelled(self, job: dict[str, Any], reason: str, who: str | None = None) -> None: ...
        def _submit_one(
            self,
            job: dict[str, Any],
            sid: int,
            lookups: Lookups | None = None,
            drain: dict[str, Any] | None = None,
        ) -> bool: ...

    def _drain_plan(
        self, wf: Any, drain: bool, targets: list[dict[str, Any]]
    ) -> dict[int, list[dict[str, Any]]]:
        """Return, per server, the load balancers a drain takes it out of; refuse label-selector targets.

        The server objects name their load balancers; only those are read (none, for a fleet behind none).
        """
        if not drain or not wf.disruptive:
            return {}
        lb_ids = sorted({int(i) for s in targets for i in s.get("load_balancers") or []})
        found = memberships(
            [self.client.get_load_balancer(i) for i in lb_ids], {int(s["id"]) for s in targets}
        )
        refuse_selector_targets(found, {int(s["id"]): s["name"] for s in targets})
        return found

    @staticmethod
    def _preflight(facts: dict[str, Any], targets: list[dict[str, Any]]) -> None:
        """Refuse the whole job before anything starts when the image cannot fit some server's disk
        (``gather_facts`` checked the first server only; each run would be refused alone, mid-job)."""
        image = facts.get("image")
        if not image:
            return
        small = []
        for server in targets:
            try:
                check_fits(image, server)
            except BadInput:
                small.append(f"{server['name']} ({server.get('primary_disk_size')} GB)")
        if small:
            shown = ", ".join(small[:10]) + (f" and {len(small) - 10} more" if len(small) > 10 else "")
            raise BadInput(
                f"image {image.get('name') or image.get('id')} needs a disk of {image.get('disk_size')} GB; "
                f"too small: {shown}",
                "image",
            )

    @staticmethod
    def _spread(job: dict[str, Any]) -> Spread | None:
        per_group, per_location = job.get("max_per_placement_group"), job.get("max_per_location")
        if per_group is None and per_location is None:
            return None
        return Spread(
            group_of={int(s["id"]): s.get("placement_group") for s in job["servers"]},
            location_of={int(s["id"]): s.get("location") for s in job["servers"]},
            max_per_group=per_group,
            max_per_location=per_location,
        )

    def _waiting(self, job: dict[str, Any]) -> dict[int, float]:
        """Return the servers whose start met an API outage and may not be tried yet, with their times (an
        advance then comes: FleetRunner._kick_for_retries)."""
        now = self.store.clock()
        return {sid: at for sid, at in (job.get("retry_at") or {}).items() if at > now}

    def _drain_again(self, job: dict[str, Any], sid: int, drain: dict[str, Any] | None) -> None:
        """A drained server whose start is put off (the budget, an API outage): out of its load balancers
        with no run, its drain carries on from there at the next pass (_tend_drains), not left out."""
        if drain is not None:
            self.store.set_outcome(job["id"], sid, drain={**drain, "state": "draining"})

    def _tend_drains(self, job: dict[str, Any]) -> bool:
        """Carry on each server being taken out of or put back into its load balancers; True if any was
        (its outcome may have changed)."""
        self._lb_cache = {}  # each load balancer read once in this pass, for all its servers
        waiting = self._waiting(job)  # their start met an API that could not answer: from their retry time
        draining = [
            (sid, e["drain"])
            for sid, e in job["outcomes"].items()
            if e["outcome"] == "running"
            and (e.get("drain") or {}).get("state") in ("draining", "restoring")
            and sid not in waiting
        ]
        for sid, drain in draining:
            self._drain_step(job, sid, drain)
        return bool(draining)

    def _start_health_check(self, job: dict[str, Any], sid: int, **entry: Any) -> None:
        """Begin a server's health check (its first look at once), recorded with ``entry``'s fields."""
        now = self.store.clock()
        check = {"state": "checking", "since": now, "deadline": now + job["health"]["timeout"], "next": now}
        self.store.set_outcome(job["id"], sid, health=check, **entry)
        if self.kick is not None:
            self.kick(job["id"], 0.0)

    def _check_health(self, job: dict[str, Any]) -> bool:
        """Look at the servers whose health check is due; return True if one of them is now done.

        Looks go out together (each may take up to the probe timeout); while any server is still being
        checked, the job asks to be advanced again at the next look's time.
        """
        health = job.get("health")
        if not health:
            return False
        now = self.store.clock()
        checking = {
            sid: e
            for sid, e in job["outcomes"].items()
            if e["outcome"] == "running" and (e.get("health") or {}).get("state") == "checking"
        }
        due = {sid: e for sid, e in checking.items() if e["health"]["next"] <= now}
        servers = {int(s["id"]): s for s in job["servers"]}
        changed = False
        later = [e["health"]["next"] for sid, e in checking.items() if sid not in due]
        if due:
            urls = {sid: health_url(health["check"], servers[sid]) for sid in due}

            def timed(url: str) -> tuple[bool, str, float]:
                healthy, detail = self.look(url)
                return healthy, detail, self.store.clock()  # when this look answered, not the round

            answers = look_all(timed, list(urls.values()))
            unanswered = (False, f"no answer within {PROBE_TIMEOUT:g} s", self.store.clock())
            looks = {sid: answer or unanswered for sid, answer in zip(urls, answers, strict=True)}
            for sid, (healthy, detail, at) in looks.items():
                check = health_verdict(due[sid]["health"], healthy, detail, at, health["settle"])
                if check["state"] == "healthy":
                    self.store.set_outcome(job["id"], sid, outcome="succeeded", health=check)
                    changed = True
                elif check["state"] == "unhealthy":
                    waited = check["deadline"] - check["since"]
                    reason = f"health check not passed within {waited:.0f} s (last: {check['last']})"
                    self.store.set_outcome(job["id"], sid, outcome="failed", reason=reason, health=check)
                    changed = True
                else:
                    self.store.set_outcome(job["id"], sid, health=check)
                    later.append(check["next"])
        if later and self.kick is not None:  # one kick per job: the deferred entry keeps the earliest
            self.kick(job["id"], max(0.0, min(later) - self.store.clock()))
        return changed

    def _blocked(self, job: dict[str, Any]) -> bool:
        """Look at the job's block URLs before a wave; while one blocks, start nothing and look again later.

        The job stays ``running`` (its runs in flight go on) and its record says why it waits (``blocked``).
        """
        urls = job.get("block_on") or []
        reason = first_block(urls, self.probe) if urls else None
        was = job.get("blocked")
        if reason is None:
            if was:
                self.store.set_blocked(job["id"], None)
                log.info("fleet job %s: no longer blocked", job["id"])
            return False
        if not was or was.get("reason") != reason:
            self.store.set_blocked(
                job["id"], {"reason": reason, "since": (was or {}).get("since") or self.store.clock()}
            )
            log.info("fleet job %s waits: %s", job["id"], reason)
        if self.kick is not None:
            self.kick(job["id"], self.recheck)
        return True

    def _note_stops(self, job: dict[str, Any], d: Decision) -> None:
        """Tell, once each, that the error threshold stopped new starts (``d``, the job's decision now) and
        that a window's end passed with the job still running (fields ``told:<event>`` keep it to once)."""
        told = job.get("told") or []
        if d.stopped_by in ("threshold", "canary") and "job.threshold_reached" not in told:
            self.store.note_told(job["id"], "job.threshold_reached", d.reason)
            self._tell("job.threshold_reached", job["id"])
        window = job.get("window") or {}
        ends_at = window.get("ends_at")
        if ends_at and self.store.clock() > float(ends_at) and "window.overran" not in told:
            self.store.note_told(job["id"], "window.overran", None)
            running = sum(1 for e in job["outcomes"].values() if e["outcome"] == "running")
            if self.on_event is not None:
                started = window.get("started_at")
                # An ISO time with its offset, as window.fired and window.skipped say it (here in UTC: the job
                # keeps its window's times, not its zone).
                local = (
                    datetime.fromtimestamp(float(started), UTC).isoformat(timespec="minutes")
                    if started
                    else None
                )
                subject = {
                    "name": window.get("name"), "local": local, "outcome": "overran",
                    "project": job.get("project"),
                    "reason": f"job {job['id']} still had {running} server(s) in flight at the window's end",
                    "job_id": job["id"], "notify": job.get("notify") or [],
                }  # fmt: skip
                try:
                    self.on_event("window.overran", subject)
                except Exception:  # telling must never stop the job
                    log.exception("fleet job %s: could not send window.overran", job["id"])

    def _await_approval(self, job: dict[str, Any], d: Decision) -> None:
        """Hold the job at an approval gate until approved, rejected, or its deadline (then it cancels)."""
        assert d.gate is not None and d.reason is not None
        now = self.store.clock()
        deadline = now + float(job.get("approval_timeout") or 3600)
        ends_at = (job.get("window") or {}).get("cutoff_at") or (job.get("window") or {}).get("ends_at")
        if ends_at:
            deadline = min(deadline, float(ends_at))  # a window's job cannot wait past the window
        held = self.store.await_approval(job["id"], d.gate, d.reason, deadline)
        log.info("fleet job %s awaiting %s until %.0f", job["id"], d.reason, held["deadline"])
        if self.kick is not None:  # an advance at the deadline cancels the job if nobody answered
            self.kick(job["id"], max(0.0, held["deadline"] - now) + 0.5)
        if held["new"]:  # told once per gate, not again after a pause and resume
            self._tell("job.awaiting_approval", job["id"])

    def _expire_approval(self, job: dict[str, Any]) -> None:
        approval = job.get("approval") or {}
        deadline = float(approval.get("deadline", float("inf")))
        if self.store.clock() < deadline:
            # An earlier kick (they share one deferred entry per job) woke us: keep the deadline's own.
            if self.kick is not None and deadline != float("inf"):
                self.kick(job["id"], deadline - self.store.clock() + 0.5)
            return
        allowed = deadline - float(approval.get("since", deadline))
        gate = GATES.get(str(approval.get("gate")), ("", "approval"))[1]
        window = job.get("window") or {}
        if deadline in (window.get("cutoff_at"), window.get("ends_at")):  # the window's end came first
            self._end_cancelled(job, f"no approval before the maintenance window's cutoff ({gate})")
            return
        self._end_cancelled(job, f"no approval within {allowed:.0f} s ({gate})")

    def _drain_entry(self, state: str, lbs: list[int]) -> dict[str, Any]:
        """Return a drain step's record as it begins: nothing sent yet, DRAIN_TIMEOUT from now to finish."""
        now = self.store.clock()
        return {"state": state, "lbs": lbs, "since": now, "deadline": now + DRAIN_TIMEOUT, "actions": None}

    @staticmethod
    def _lbs(job: dict[str, Any], sid: int) -> list[int]:
        if not job.get("drain"):
            return []
        return next((list(s.get("lbs") or []) for s in job["servers"] if int(s["id"]) == sid), [])

    def _drain_step(
        self, job: dict[str, Any], sid: int, drain: dict[str, Any], lookups: Lookups | None = None
    ) -> bool:
        """Carry a server's drain one step on (every request safe to send again); True unless the budget
        said to try again later."""
        drainer, now = Drainer(self.client), self.store.clock()
        state, lbs = drain["state"], drain["lbs"]
        verb = "remove_target" if state == "draining" else "add_target"
        if drain.get("actions") is None:  # not sent yet (or the sender died before it noted them)
            actions, _ = safely(drainer.send, verb, lbs, sid)  # failed: sent again at the next pass
            if actions is not None:
                drain = {**drain, "actions": [int(a["id"]) for a in actions]}
                self.store.set_outcome(job["id"], sid, drain=drain)
        done, error = False, None
        if drain.get("actions") is not None:
            ended, _ = safely(drainer.finished, drain["actions"])
            done, error = ended if ended is not None else (False, None)
        if state == "draining":
            if done and error is None:
                self.store.set_outcome(job["id"], sid, drain={**drain, "state": "out"})
                return self._submit_one(job, sid, lookups, drain={**drain, "state": "out"})
            if error is not None or now >= drain["deadline"]:
                why = error or f"not taken out of its load balancers within {DRAIN_TIMEOUT:.0f} s"
                self._put_back(job, sid, drain, {"outcome": "failed", "reason": f"drain: {why}"})
                return True
        else:  # restoring: once back, wait until every load balancer says healthy
            if done and error is None:
                ok, detail = safely(drainer.healthy, lbs, sid, self._lb_cache)
                healthy, said = ok if ok is not None else (False, detail)
                if healthy:
                    return self._back(job, sid, drain)
                if "server_status" not in drain:
                    # Looked at once: a server its run left off (or one that was off all along) is never
                    # healthy, and waiting the full timeout for it held a slot of the job for nothing.
                    found, _ = safely(self.client.get_server, sid)
                    drain = {**drain, "server_status": (found or {}).get("status")}
                    # Off only: one starting or migrating may yet become healthy (a reviewer).
                    if found is not None and found.get("status") == "off":
                        return self._back(
                            job, sid, drain, f"not waited for healthy: the server is {found['status']}"
                        )
                drain = {**drain, "last": said}
                self.store.set_outcome(job["id"], sid, drain=drain)
            if error is not None or now >= drain["deadline"]:
                then = drain.get("then") or {}
                reason = (
                    f"NOT put back into load balancers {lbs} ({error}): add it by hand"
                    if error is not None
                    else f"load balancer not healthy within {DRAIN_TIMEOUT:.0f} s ({drain.get('last')})"
                )
                if then.get("outcome") == "failed":
                    reason = f"{then.get('reason')}; {reason}"
                self.store.set_outcome(
                    job["id"], sid, outcome="failed", reason=reason, drain={**drain, "state": "back"}
                )
                return True
        if self.kick is not None:
            self.kick(job["id"], DRAIN_EVERY)
        return True

    def _put_back(self, job: dict[str, Any], sid: int, drain: dict[str, Any], then: dict[str, Any]) -> None:
        """Start adding a server back to its load balancers; ``then`` is its outcome once it is back."""
        back = {**drain, **self._drain_entry("restoring", drain["lbs"]), "then": then}
        self.store.set_outcome(job["id"], sid, outcome="running", drain=back)
        self._drain_step(job, sid, back)

    def _put_back_now(
        self, job: dict[str, Any], sid: int, drain: dict[str, Any], then: dict[str, Any]
    ) -> None:
        """Add a server back to its load balancers once, for a job that ended: no waiting for health."""
        _, why = safely(Drainer(self.client).send, "add_target", drain["lbs"], sid)
        note = (
            "put back into its load balancers (not waited for: the job ended)"
            if why is None
            else f"NOT put back into load balancers {drain['lbs']} ({why}): add it by hand"
        )
        reason = "; ".join(r for r in (then.get("reason"), note) if r)
        outcome = then.get("outcome") or "cancelled"
        self.store.set_outcome(
            job["id"], sid, outcome=outcome, reason=reason, drain={**drain, "state": "back"}
        )

    def _back(
        self, job: dict[str, Any], sid: int, drain: dict[str, Any], unwaited: str | None = None
    ) -> bool:
        """A server is back in its load balancers and healthy there (or, ``unwaited``, not waited for): its
        health check, or its outcome."""
        then = drain.get("then") or {"outcome": "succeeded"}
        last = unwaited or "healthy on every port"
        drain = {**drain, "state": "back", "back_at": self.store.clock(), "last": last}
        if then["outcome"] == "succeeded" and job.get("health") and unwaited is None:
            self._start_health_check(job, sid, drain=drain)
            return True
        reason = "; ".join(
            r for r in (then.get("reason"), unwaited and f"back in its load balancers, {last}") if r
        )
        extra = {"reason": reason} if reason else {}
        self.store.set_outcome(job["id"], sid, outcome=then["outcome"], drain=drain, **extra)
        return True

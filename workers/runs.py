"""What happens to a run when one of its steps starts, succeeds or fails, wherever that is noticed.

A step ends either inside its task (nothing to wait for, or an error raised before parking) or in the
monitor (its wait ended). Both paths call ``step_succeeded`` / ``step_failed`` here, so the run record,
the server lock and the server's queue change the same way in either case.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery, signature

from .counters import Counters
from .errors import HcloudFlowError, RunCancelled
from .run_store import FINAL, RunStore
from .server_actions import ACTIONS

__all__ = ["PLAN_CHECKS", "RUN_LISTENERS", "RUN_STARTED", "RunHooks", "error_info"]

log = logging.getLogger(__name__)

# Called with each run record once it has ended; fleet jobs register here to start their next servers.
RUN_LISTENERS: list[Callable[[dict[str, Any]], None]] = []
# Called with each run record as its first step begins (notifications register here).
RUN_STARTED: list[Callable[[dict[str, Any]], None]] = []
# Say why a queued run's planned steps no longer fit its server's status now, or None (the workflows' own
# rule, registered by workflows.tasks: which steps a workflow plans depends on the server's status).
PLAN_CHECKS: list[Callable[[dict[str, Any], str], str | None]] = []


def error_info(exc: BaseException) -> dict[str, Any]:
    """Return the JSON a run record keeps of an error: its type, message and the fields people need."""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in ("server_id", "step", "action_id", "action_running", "code", "status", "correlation_id"):
        value = getattr(exc, name, None)
        if value is not None:
            info[name] = value
    return info


def _gave_up_on(stopped_at: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any] | None:
    """Say what a run that gave up waiting on its own action left: not known (None: it did not give up so).

    A rebuild past its deadline, still rebuilding, was reported "off", and a power on past its deadline "not
    running"; both servers came up running. The deadline is judged before the action is looked at again, so
    the action may have ended since the last look: "not seen to finish".
    """
    error = run.get("error") or {}
    if stopped_at is None or stopped_at.get("status") != "failed" or not error.get("action_running"):
        return None
    why = (
        f"the run gave up waiting at {stopped_at['name']} before it saw its action {error.get('action_id')} "
        "finish: the server ends as that action leaves it"
    )
    return {"status": "unknown", "why": why}


def _with_lasting(left: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Add to what a run left what its succeeded steps left set for later: a rescue that failed at its
    reset said "running" of a server whose next boot starts the rescue system (an outside test)."""
    lasting = [
        ACTIONS[s["action"]].leaves
        for s in run["steps"]
        if s.get("status") == "succeeded" and s.get("action") in ACTIONS and ACTIONS[s["action"]].leaves
    ]
    return {**left, "also": lasting} if lasting else left


class RunHooks:
    """Keep run records in step with their chains; start queued runs when a server is freed."""

    def __init__(
        self, store: RunStore, app: Celery, status_of: Callable[[dict[str, Any]], str] | None = None
    ) -> None:
        self.store = store
        self.app = app
        self.counters = Counters(store.redis, store.prefix)
        # Reads a run's server status from the API (a worker's hooks; None where there is no token).
        self.status_of = status_of

    def _count_step(self, pipe: Any, run: dict[str, Any], index: int, outcome: str) -> None:
        """Stage in ``pipe`` the count of a step's end for /metrics: by workflow, action and outcome, and
        how long its action took."""
        step = run["steps"][index]
        action = str(step.get("action") or step.get("name"))
        self.counters.add("steps", (run["workflow"], action, outcome), pipe=pipe)
        if step.get("started") and outcome == "succeeded":
            seconds = self.store.clock() - float(step["started"])
            self.counters.observe("action_seconds", (action,), seconds, pipe=pipe)

    def _index(self, run: dict[str, Any], task_id: str) -> int | None:
        for step in run["steps"]:
            if step["task_id"] == task_id:
                return int(step["index"])
        return None

    def step_started(self, run_id: str, task_id: str) -> bool:
        """Record that a step began; raise RunCancelled if the run was cancelled before it.

        Return False, recording nothing, when the run has no such step: a message that names a run (in its
        options, or in a "previous step's result" written by hand) is not let into that run's hold on the
        server unless the run planned it.
        """
        run, cancelled = self.store.get_for_step(run_id)
        if run is None:
            return False
        if task_id == (run.get("restore") or {}).get("task_id"):
            self.store.refresh(
                run["server_id"], run_id, run["lock_ttl"]
            )  # the restore runs, cancelled or not
            return True
        index = self._index(run, task_id)
        if index is None:
            return False
        if cancelled:
            raise RunCancelled(run_id, run["steps"][index]["name"])
        first = run["state"] == "queued"
        # Started: the record need not keep the chain's arguments any more.
        self.store.begin_step(run, index, self.store.clock(), first=first)
        if first:
            for listener in RUN_STARTED:
                try:
                    listener({**run, "state": "running"})
                except Exception:  # a listener's failure must not stop the run
                    log.exception("run start listener failed for run %s", run_id)
        return True

    def step_succeeded(self, run_id: str, task_id: str, result: dict[str, Any], last: bool) -> None:
        """Record a step's success; finish the run after its last step."""
        run = self.store.get(run_id, live=False)
        if run is None:
            return
        if task_id == (run.get("restore") or {}).get("task_id"):
            status = result.get("server_status") or "running"
            skipped = bool(result.get("skipped"))
            restore = {**run["restore"], "state": "done", "skipped": skipped}
            if result.get("action_id"):
                restore["action_id"] = result["action_id"]
            stop = "the cancel" if run["state"] == "cancelled" else "the failure"
            why = "still running: it was never stopped" if skipped else f"powered on again after {stop}"
            # The run ends only now, with its restore (has_ended).
            left = {"status": status, "why": why}
            self._ended(run, restore=restore, left=left, finished=self.store.clock())
            return
        index = self._index(run, task_id)
        if index is None:
            return  # not a step of this run (see step_started): it neither records nor ends the run
        # The step's writes in one round trip (after update_step's read): its image, its record, its counts.
        pipe = self.store.redis.pipeline(transaction=False)
        image = (result.get("outputs") or {}).get("image") or {}
        if image.get("id"):
            self.store.note_image(pipe, int(image["id"]), run_id)  # for `hcloud-flow images`
        keep = {k: result.get(k) for k in ("action_id", "outputs", "forced", "server_status", "skipped")}
        self.store.update_step(
            run_id,
            index,
            pipe=pipe,
            status="succeeded",
            finished=self.store.clock(),
            **{k: v for k, v in keep.items() if v is not None},
        )
        self._count_step(pipe, run, index, "succeeded")
        pipe.execute()
        if last:
            self._finish(run, "succeeded", None)

    def step_failed(self, run_id: str, task_id: str, exc: BaseException) -> None:
        """Record a step's failure (or the cancel it met) and finish the run."""
        run = self.store.get(run_id, live=False)
        if run is None:
            return
        if task_id == (run.get("restore") or {}).get("task_id"):
            restore = {**run["restore"], "state": "failed", "error": error_info(exc)}
            left = {"status": "not running", "why": f"power on failed: {exc}"}
            self._ended(run, restore=restore, left=left, finished=self.store.clock())
            return
        index = self._index(run, task_id)
        if index is None:
            return  # not a step of this run (see step_started): its failure is not the run's
        cancelled = isinstance(exc, RunCancelled)
        pipe = self.store.redis.pipeline(transaction=False)
        self.store.update_step(
            run_id,
            index,
            pipe=pipe,
            status="cancelled" if cancelled else "failed",
            finished=self.store.clock(),
            error=error_info(exc),
        )
        self._count_step(pipe, run, index, "cancelled" if cancelled else "failed")
        pipe.execute()
        self._finish(run, "cancelled" if cancelled else "failed", None if cancelled else error_info(exc))

    def _finish(self, run: dict[str, Any], state: str, error: dict[str, Any] | None) -> None:
        current = self.store.get(run["id"], live=False)
        if current is not None and current["state"] in FINAL:
            # Finished before, perhaps by a process that died before it freed the server and told the
            # listeners (this is the redelivered or re-dispatched ending): finish that part, once.
            if not current.get("notified") and (current.get("restore") or {}).get("state") != "powering_on":
                self._ended(current)
            return
        fields: dict[str, Any] = {"finished": self.store.clock()}
        if error is not None:
            fields["error"] = error
        # The record as it is about to be written: read once above (after the step's own update).
        ended = {**(current or run), "state": state, **fields}
        restore_id, left = self._restore_plan(ended) if state != "succeeded" else (None, None)
        if state != "succeeded" and restore_id is None and left is None:
            left = self._left_as_is(ended)
        # The final state and the restore under way go in one write: a reader between two writes saw the run
        # ended (failed, no restore) before the power-on that the run still owed the server was sent.
        if restore_id is not None:
            fields["restore"] = {"state": "powering_on", "task_id": restore_id}
        if left is not None:
            fields["left"] = _with_lasting(left, ended)
        self.store.set_state(run["id"], state, **fields)  # type: ignore[arg-type]
        self.counters.add("runs", (run["workflow"], state))
        log.info("run %s (%s on server %s) %s", run["id"], run["workflow"], run["server_id"], state)
        ended = {**ended, **fields}
        if restore_id is not None:
            self._send_restore(ended, restore_id)
            return  # the server stays held until the restore has ended (_ended)
        self._ended(ended)

    def _restore_plan(self, run: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """Decide whether to power on again a server that the run found running and stopped before it failed
        or was cancelled; return the restore's task id (None: no restore) and what the run left, if that
        is known now.

        Only where the step it stopped at says so (``restore`` in the run's step list: a failed snapshot
        must not leave a running server off; a failed rebuild step is not booted), the server was running
        before, and the user did not ask ``--leave-off``.
        """
        stopped_at = next((s for s in run["steps"] if s.get("status") in ("failed", "cancelled")), None)
        if (
            stopped_at is None
            or stopped_at["status"] not in (stopped_at.get("restore") or ())
            or run.get("server_status_before") != "running"
            or (run.get("params") or {}).get("leave_off")
        ):
            starter_failed = (
                stopped_at is not None
                and stopped_at["status"] == "failed"
                and "cancelled" in (stopped_at.get("restore") or ())
                and "failed" not in (stopped_at.get("restore") or ())
            )
            gave_up = _gave_up_on(stopped_at, run)
            if gave_up is not None:
                return None, gave_up
            if starter_failed and stopped_at is not None:
                # The step that would have started the server again is the one that failed: say so.
                why = f"{stopped_at['name']} failed: {(run.get('error') or {}).get('message', '')}"
                return None, {"status": "not running", "why": why[:500]}
            return None, None
        return f"{run['id']}-restore-{uuid.uuid4().hex[:8]}", None

    def _left_as_is(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """Say what a failed or cancelled run that powers nothing on again left its server in (a failed
        rebuild step, ``--leave-off``, a server that was off before): those runs ended saying nothing of a
        server they had shut down. None where no step of the run acted.

        The status is the last one the run saw (a step's target state, else the server's before the run),
        not a read of the API: this runs inside the monitor's round, where a slow API held every ending.
        """
        acted = any(s.get("status") in ("succeeded", "failed") for s in run["steps"])
        seen = [
            s["server_status"]
            for s in run["steps"]
            if s.get("status") == "succeeded" and s.get("server_status")
        ]
        status = seen[-1] if seen else run.get("server_status_before")
        if not acted or not status:
            return None
        stopped_at = next((s for s in run["steps"] if s.get("status") in ("failed", "cancelled")), None)
        gave_up = _gave_up_on(stopped_at, run)
        if gave_up is not None:
            return gave_up
        ended = "was cancelled" if run["state"] == "cancelled" else run["state"]
        why = f"the run {ended}" + (f" at {stopped_at['name']}" if stopped_at else "")
        before = run.get("server_status_before")
        if before and before != "running":
            why += f"; the server was {before} before it"
        elif (run.get("params") or {}).get("leave_off"):
            why += "; not powered on again (--leave-off)"
        elif stopped_at is not None and stopped_at["status"] not in (stopped_at.get("restore") or ()):
            why += f"; a failed {stopped_at['name']} step is not booted"
        return {"status": status, "why": f"{why} (as the run last saw it)"[:500]}

    def _send_restore(self, run: dict[str, Any], task_id: str) -> None:
        """Send the power-on of a restore whose record ``_finish`` wrote."""
        kwargs = {"run_id": run["id"], "step": "restore_power", "skip_if_status": "running"}
        if run.get("project"):
            kwargs["project"] = run["project"]
        try:
            signature(
                "hcloud_flow.power_on", args=(run["server_id"],), kwargs=kwargs, app=self.app
            ).apply_async(task_id=task_id)
        except Exception as exc:  # the broker refused it: the run says the server was left as it was
            restore = {"state": "failed", "task_id": task_id, "error": error_info(exc)}
            self._ended(
                run, restore=restore, left={"status": "unknown", "why": f"could not send power on: {exc}"}
            )

    def _ended(self, run: dict[str, Any], **fields: Any) -> None:
        """Free the server, start what is queued behind it, and tell the listeners that the run ended."""
        if fields:
            self.store.set_state(run["id"], run["state"], **fields)
            run = {**run, **fields}
        self.store.release(run["server_id"], run["id"])
        self.start_next(run["server_id"])
        for listener in RUN_LISTENERS:
            try:
                listener(run)
            except Exception:  # one listener's failure must not undo the run's ending
                log.exception("run listener failed for run %s", run["id"])
        self.store.set_state(run["id"], run["state"], notified=True)

    def start(self, run: dict[str, Any]) -> None:
        """Send a run's chain (its steps' task ids were fixed at submit)."""
        signature(run["chain"], app=self.app).apply_async()

    def _stale_plan(self, run: dict[str, Any]) -> tuple[str | None, str | None]:
        """Say why a queued run's steps no longer fit its server, or None. They were planned for the server's
        status when it was queued: queued behind a snapshot that had stopped the server, a rebuild ran once
        it was running again, with no shutdown and a safety snapshot of a running server (an outside test).
        When the status cannot be read, the run starts as planned: its steps meet the API's own refusals.
        Returns (why, or None) and the status read (None: not read)."""
        if self.status_of is None or not PLAN_CHECKS:
            return None, None
        try:
            now = self.status_of(run)
        except HcloudFlowError:
            return None, None
        return next((why for check in PLAN_CHECKS if (why := check(run, now)) is not None), None), now

    def start_next(self, server_id: int) -> None:
        """Start the first run queued behind the server, if the server is free."""
        while (run_id := self.store.dequeue(server_id)) is not None:
            run = self.store.get(run_id, live=False)
            if run is None or run["state"] != "queued":
                continue
            if self.store.cancel_requested(run_id):
                self.store.set_state(run_id, "cancelled", finished=self.store.clock())
                continue
            holder = self.store.acquire(server_id, run_id, run["lock_ttl"])
            if holder is not None and holder != run_id:
                self.store.redis.lpush(f"{self.store.prefix}:queue:server:{server_id}", run_id)
                return
            stale, found = self._stale_plan(run)
            if stale is not None:
                error = {"type": "BadInput", "message": stale, "step": None}
                self.store.set_state(run_id, "failed", finished=self.store.clock(), error=error)
                self._ended({**run, "state": "failed", "error": error})  # frees the server for the next
                return
            if found is not None and found != run.get("server_status_before"):
                # Its plan fits, but it was made for another status (the run ahead was to leave the server
                # running, and left it off): what the run says it left, if it stops, starts from this.
                self.store.note_found(run_id, found)
            try:
                self.start(run)
                self.store.drop_chain(run_id)  # sent: the record need not keep the chain's arguments
            except HcloudFlowError as exc:  # pragma: no cover - broker down; the run says why
                self.store.set_state(run_id, "failed", finished=self.store.clock(), error=error_info(exc))
                self.store.release(server_id, run_id)
                continue
            return

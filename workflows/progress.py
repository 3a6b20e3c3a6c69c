"""Live progress of runs for a terminal: a bar per step from the actions' progress, and elapsed time.

On a terminal the block is redrawn in place; elsewhere (CI logs, pipes) one line is printed per run and per
change of its state or of a step's status, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from workers.projects import DEFAULT_PROJECT

__all__ = ["LiveView", "change_line", "render_run"]

_ICONS = {"pending": " ", "running": ">", "succeeded": "✓", "failed": "✗", "cancelled": "-"}
_BAR = 20


def _bar(progress: int) -> str:
    filled = round(_BAR * max(0, min(100, progress)) / 100)
    return "#" * filled + "." * (_BAR - filled)


def _elapsed(run: dict[str, Any], now: float) -> float:
    # Since it was submitted: counted from its start once it started, the lines of one run went back in time.
    start = run.get("created") or run.get("started") or now
    end = run.get("finished") or now
    return max(0.0, end - start)


def render_run(run: dict[str, Any], now: float | None = None) -> list[str]:
    """Return the display lines of one run."""
    now = time.time() if now is None else now
    # The project is named when it is not the single-project installation's own ("default").
    where = f" ({run['project']})" if run.get("project") not in (None, DEFAULT_PROJECT) else ""
    head = (
        f"run {run['id']}  {run['workflow']} on {run.get('server_name') or run['server_id']}{where}  "
        f"{run['state']}  {_elapsed(run, now):5.1f}s"
    )
    lines = [head]
    for step in run["steps"]:
        status = step.get("status", "pending")
        progress = 100 if status == "succeeded" else int(step.get("progress") or 0)
        extra = f" action {step['action_id']}" if step.get("action_id") else ""
        if step.get("posted") and not step.get("action_id"):
            extra += " posted, its answer not recorded yet"
        if step.get("forced"):
            extra += " (guest ignored ACPI: powered off)"
        if step.get("skipped"):
            extra += " (already in state, skipped)"
        outputs = step.get("outputs") or {}
        if (outputs.get("image") or {}).get("id"):
            extra += f" → image {outputs['image']['id']}"
        lines.append(
            f"  {_ICONS.get(status, '?')} {step['name']:<16} [{_bar(progress)}] {progress:3d}%{extra}"
        )
    if run.get("error"):
        lines.append(f"  error: {run['error']['message']}")
    for step in run["steps"]:
        password = (step.get("outputs") or {}).get("root_password")
        if password is None:
            continue
        if password.get("sealed"):
            lines.append(
                f"  root password ({step['name']}) sealed: `hcloud-flow secret {run['id']}` shows it"
            )
        else:
            lines.append(f"  root password ({step['name']}): {password.get('notice')}")
    for step in run["steps"]:
        pruned = (step.get("outputs") or {}).get("pruned")
        if pruned:
            gone = [str(i["id"]) for i in pruned.get("deleted") or []]
            line = f"  prune: deleted {len(gone)} older snapshot(s)" + (
                f" ({', '.join(gone)})" if gone else ""
            )
            line += f", kept {len(pruned.get('kept') or [])}"
            for failed in pruned.get("failed") or []:
                line += f"; could not delete {failed['id']}: {failed['error']}"
            if pruned.get("error"):
                line = f"  prune: nothing deleted, {pruned['error']}"
            lines.append(line)
    restore = run.get("restore") or {}
    if restore.get("state") == "powering_on":
        lines.append("  powering the server on again, as it was running before the run")
    elif restore.get("state") in ("done", "failed"):
        # Not a step of the workflow, so no step line shows its action (an outside test looked for it).
        action = f"action {restore['action_id']}" if restore.get("action_id") else "no action"
        lines.append(f"  restore power on: {restore['state']}, {action}")
    if run.get("left"):
        left = run["left"]
        lines.append(f"  {run.get('server_name') or run['server_id']} left {left['status']}: {left['why']}")
        lines.extend(f"  and {also}" for also in left.get("also") or ())
    return lines


def change_line(run: dict[str, Any], now: float | None = None) -> str:
    """Return one log line saying where a run stands: its state and the step it is at."""
    now = time.time() if now is None else now
    steps = run["steps"]
    at = next((s for s in steps if s.get("status") in ("running", "failed", "cancelled")), None)
    done = sum(1 for s in steps if s.get("status") == "succeeded")
    where = f", step {at['name']} {at.get('status')}" if at else ""
    error = f": {run['error']['message']}" if run.get("error") else ""
    server = run.get("server_name") or run["server_id"]
    return (
        f"{_elapsed(run, now):6.1f}s run {run['id']} {run['workflow']} on {server}: {run['state']} "
        f"({done}/{len(steps)} steps{where}){error}"
    )


class LiveView:
    """Draw runs as they change."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._last: dict[str, Any] = {}

    def update(self, runs: list[dict[str, Any]]) -> None:
        if not self.tty:
            # A log gets one line per run that changed state or step status, not a block per progress tick.
            for run in runs:
                key = (run["state"], [s.get("status") for s in run["steps"]])
                if self._last.get(run["id"]) != key:
                    self._last[run["id"]] = key
                    self.out.write(change_line(run) + "\n")
            self.out.flush()
            return
        lines = [line for run in runs for line in render_run(run)]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self._drawn = len(lines)
        self.out.flush()

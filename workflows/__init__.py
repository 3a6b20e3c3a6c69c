"""hcloud-flow's workflow side: workflow definitions, submission, fleet jobs, schedules, the CLI.

The Python API in one line each: ``submit(name, server=…, **params) -> run id``, ``status(run_id)``,
``cancel(run_id)``, ``wait(run_id, timeout=…)``, ``list_runs()``.
"""

from .api import Runs, cancel, list_runs, status, submit, wait
from .definitions import WORKFLOWS

__all__ = ["WORKFLOWS", "Runs", "cancel", "list_runs", "status", "submit", "wait"]

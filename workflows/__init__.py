"""hcloud-flow's workflow side: workflow definitions, submission, fleet jobs, schedules, the CLI.

The Python API in one line each: ``submit(name, server=…, **params) -> run id``, ``status(run_id)``,
``cancel(run_id)``, ``wait(run_id, timeout=…)``, ``list_runs()``, ``prune_images(selector=…, keep=…)``; fleet
jobs through ``jobs()``
(``start``, ``plan``, ``control``, ``status``, ``wait``).
"""

from .api import Runs, cancel, jobs, list_runs, prune_images, status, submit, wait
from .definitions import WORKFLOWS

__all__ = ["WORKFLOWS", "Runs", "cancel", "jobs", "list_runs", "prune_images", "status", "submit", "wait"]

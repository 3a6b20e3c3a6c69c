"""hcloud-flow's workflow side: workflow definitions, submission, fleet jobs, schedules, the CLI.

The Python API in one line each: ``submit(name, server=…, **params) -> run id``, ``status(run_id)``,
``cancel(run_id)``, ``wait(run_id, timeout=…)``, ``list_runs()``, ``prune_images(selector=…, keep=…)``; fleet
jobs through ``jobs()`` (``start``, ``plan``, ``control``, ``status``, ``wait``).

Imported when first used (PEP 562): every ``hcloud-flow`` command imports this package, and importing the
API here had cost each one, ``--help`` included, Celery, redis-py and requests before it did anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Runs, cancel, jobs, list_runs, prune_images, status, submit, wait
    from .definitions import WORKFLOWS

__all__ = ["WORKFLOWS", "Runs", "cancel", "jobs", "list_runs", "prune_images", "status", "submit", "wait"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'workflows' has no attribute {name!r}")
    module = importlib.import_module(".definitions" if name == "WORKFLOWS" else ".api", __name__)
    return getattr(module, name)

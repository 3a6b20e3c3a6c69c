"""hcloud-flow's Celery app as every process needs it, workers, beat, Flower, the CLI and other callers alike:
configured from celeryconfig, and sending no task message whose argument reprs hold a rebuild's user data.

The workers' own runtime (engines, the monitor, worker signals) is ``workers/app.py``, which serves this same
app: a caller that only sends (the CLI submitting a run) imports this module alone, not the engine and the API
client it never uses.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import before_task_publish

import celeryconfig

from .result_backend import redact_reprs

__all__ = ["app"]

app = Celery("hcloud_flow", include=["workers.tasks", "workflows.tasks"])
app.config_from_object(celeryconfig)
# Task events (Flower's pages) show each message's argument reprs: never a rebuild's user data.
before_task_publish.connect(redact_reprs, weak=False)

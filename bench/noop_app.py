"""A bare Celery app with hcloud-flow's own settings and one no-op task: the throughput baseline."""

from __future__ import annotations

from typing import Any

from celery import Celery

import celeryconfig

app = Celery("noop")
app.config_from_object(celeryconfig)


@app.task(name="bench.noop")
def noop(previous: Any = None, server_id: int = 0) -> dict[str, Any]:
    """Do nothing and pass a small JSON result on, like a step would."""
    return {"server_id": server_id, "previous": bool(previous)}

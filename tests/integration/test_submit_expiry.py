"""A submission the caller was told failed never runs later: it expires with the caller's patience.

Found from outside: with no worker running, `hcloud-flow run power-off` waited, said no worker answered,
exited 3 — and when a worker started, the server was powered off. Here the submit message expires when the
caller stops waiting, and a worker that starts afterwards drops it unrun.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.errors import HcloudFlowError
from workers.run_store import RunStore
from workflows.api import Runs

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, client_app, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=4, speed=20.0, seed=5)
    yield c
    c.stop()


def test_a_submission_nobody_took_in_time_never_runs(cloud: Any, tmp_path: Path, logdir: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")  # its own: no other module's worker can take the message
    app = client_app(redis_server.url)
    control = Control(cloud.control_url)
    first, second = Api(cloud.base_url).server_ids()[:2]
    for sid in (first, second):
        control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    runs = Runs(app, RunStore(redis_server.client()))
    worker = None
    try:
        with pytest.raises(HcloudFlowError) as info:
            runs.submit("power-off", server=first, timeout=1.0)
        assert "expired and will not run" in str(info.value) and "nothing was started" in str(info.value)
        # The message is still on the queue when a worker comes.
        assert redis_server.client().llen("hcloud_flow") == 1
        worker = Worker("expiry", worker_env(redis_server.url, cloud.base_url), logdir)
        run_id = runs.submit("power-off", server=second, timeout=30)  # the worker serves the queue ...
        assert runs.wait(run_id, timeout=60)["state"] == "succeeded"
        # ... and dropped the stale submission instead of powering the first server off.
        assert control.posts(first) == []
        assert Api(cloud.base_url).server(first)["status"] == "running"
        assert [r["server_id"] for r in runs.list()] == [second], "no run was recorded for the first server"
        assert b"Discarding revoked task: hcloud_flow.submit" in worker.log.read_bytes()
    finally:
        if worker is not None:
            worker.stop()
        app.close()
        redis_server.stop()

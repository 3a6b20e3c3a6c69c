"""Root passwords are sealed with the configured key before they reach Redis, and open only with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workers.errors import SecretError
from workers.sealing import generate_key, open_sealed

from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, worker_env

pytestmark = pytest.mark.integration
KEY = generate_key()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    w = Worker("sealing", worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_SECRET_KEY=KEY), logdir)
    yield w
    w.stop()


@pytest.mark.parametrize(("name", "kwargs"), [("reset_password", {}), ("rebuild", {"image": "debian-12"})])
def test_password_is_sealed_and_opens_only_with_the_key(
    worker: Worker, celery_client: Celery, cloud: Any, name: str, kwargs: dict[str, Any]
) -> None:
    api, control = Api(cloud.base_url), Control(cloud.control_url)
    sid = api.server_ids()[-1 if name == "rebuild" else -2]
    control.send("PATCH", f"/servers/{sid}", {"status": "running"})
    result = celery_client.send_task(f"hcloud_flow.{name}", args=[sid], kwargs=kwargs).get(timeout=60)
    sealed = result["outputs"]["root_password"]
    handed_out = control.get("/secrets")["root_passwords"][-1]
    assert handed_out not in str(result)
    assert open_sealed(sealed, KEY) == handed_out
    with pytest.raises(SecretError, match="no key in HCLOUD_FLOW_SECRET_KEY opens this secret"):
        open_sealed(sealed, generate_key())
    with pytest.raises(SecretError, match="HCLOUD_FLOW_SECRET_KEY"):
        open_sealed(sealed, None)

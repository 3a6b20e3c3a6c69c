"""After every other test: no API token and no root password in plaintext in Redis or in any worker log."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import STARTED_CLOUDS
from .support import TOKEN, RedisServer, leaks, redis_blobs


@pytest.mark.audit
def test_no_secret_in_redis_or_logs(
    redis_server: RedisServer, logdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    passwords = {p for cloud in STARTED_CLOUDS for p in cloud.backend.root_passwords}
    secrets = {TOKEN.encode()} | {p.encode() for p in passwords}
    blobs = redis_blobs(redis_server.client())
    # Every log any test captured: workers, beats, Flower, and the docker-compose services' processes.
    logs = {str(p): p.read_bytes() for p in tmp_path_factory.getbasetemp().rglob("*.log")}
    if not blobs and not logs:
        pytest.skip("no integration test ran before the audit")
    if not passwords:
        pytest.skip("the tests that ran handed out no root password (the full suite does)")
    # fakecloud prints its own token on start by design; it is the simulator's, not a worker's log.
    logs = {name: text for name, text in logs.items() if "fakecloud" not in name}
    found = leaks(secrets, {"redis": blobs, **{name: [text] for name, text in logs.items()}})
    assert not found, f"plaintext secrets found: {found}"

"""The secrets audit: no API token and no root password in plaintext in Redis or in any captured log.

Each test module is audited when it ends (``tests/conftest.py``); the last test here audits everything this
process started once more, and the first proves the audit finds a secret where one was left.
"""

from __future__ import annotations

import pytest

from .conftest import STARTED_CLOUDS, STARTED_REDIS
from .support.audit import audit, secrets_of
from .support.cloud import TOKEN
from .support.processes import RedisServer


def test_the_audit_finds_a_secret_left_in_redis_or_a_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    where = tmp_path_factory.mktemp("planted")
    server = RedisServer(where / "redis")
    try:
        secret = b"pw-planted-0123456789"
        assert audit({secret}, [server], where) == []
        server.client().hset("hf:run:x", "outputs", b'{"root_password": "' + secret + b'"}')
        (where / "worker-planted.log").write_bytes(b"INFO got " + secret + b"\n")
        found = {place for _, place in audit({secret}, [server], where)}
        assert found == {f"redis:{server.port}", str(where / "worker-planted.log")}
    finally:
        server.stop()


@pytest.mark.audit
def test_no_secret_in_redis_or_logs(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not STARTED_REDIS and not STARTED_CLOUDS:
        pytest.skip("no integration test ran in this process before the audit")
    found = audit(secrets_of(TOKEN, STARTED_CLOUDS), STARTED_REDIS, tmp_path_factory.getbasetemp())
    assert not found, f"plaintext secrets found: {found}"

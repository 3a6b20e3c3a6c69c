"""After every other test: no API token and no root password in plaintext in Redis or in any worker log."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import STARTED_CLOUDS
from .support import TOKEN, RedisServer


def _redis_dump(server: RedisServer) -> list[bytes]:
    client = server.client()
    out: list[bytes] = []
    for db in range(16):
        client.execute_command("SELECT", db)
        for key in client.scan_iter(count=1000):
            out.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                out.append(client.get(key) or b"")
            elif kind == "hash":
                out += [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "list":
                out += client.lrange(key, 0, -1)
            elif kind == "set":
                out += list(client.smembers(key))
            elif kind == "zset":
                out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    client.execute_command("SELECT", 0)
    return out


@pytest.mark.audit
def test_no_secret_in_redis_or_logs(redis_server: RedisServer, logdir: Path) -> None:
    passwords = {p for cloud in STARTED_CLOUDS for p in cloud.backend.root_passwords}
    secrets = {TOKEN.encode()} | {p.encode() for p in passwords}
    blobs = _redis_dump(redis_server)
    logs = {path.name: path.read_bytes() for path in logdir.glob("*.log")}
    if not blobs and not logs:
        pytest.skip("no integration test ran before the audit")
    if not passwords:
        pytest.skip("the tests that ran handed out no root password (the full suite does)")
    leaks = [(s, "redis") for s in secrets for blob in blobs if s in blob]
    leaks += [(s, name) for s in secrets for name, text in logs.items() if s in text]
    assert not leaks, f"plaintext secrets found: {sorted({(s[:4] + b'...', where) for s, where in leaks})}"

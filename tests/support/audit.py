"""The secrets audit's tools: everything a Redis server holds, and where a secret shows in plaintext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis


def redis_blobs(client: redis.Redis) -> list[bytes]:
    """Return every key and every value in every database of a Redis server (for the secrets audit)."""
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


def leaks(secrets: set[bytes], blobs: dict[str, list[bytes]]) -> list[tuple[str, str]]:
    """Return (secret prefix, where) for every secret found in plaintext in the named blobs."""
    return sorted(
        {
            (s[:4].decode(errors="replace") + "...", where)
            for s in secrets
            if s
            for where, items in blobs.items()
            for blob in items
            if s in blob
        }
    )


def secrets_of(token: str, clouds: list[Any]) -> set[bytes]:
    """Return what must never show in plaintext: the API token and every root password fakecloud issued."""
    tokens = {token.encode()} | {str(cloud.backend.token).encode() for cloud in clouds}  # every project's
    return tokens | {p.encode() for cloud in clouds for p in cloud.backend.root_passwords}


def audit(secrets: set[bytes], servers: list[Any], logs_under: Path) -> list[tuple[str, str]]:
    """Return where any secret shows: in the running Redis servers given, or in a log under ``logs_under``.

    fakecloud prints its own token on start by design: its log is the simulator's, not ours, and is skipped.
    """
    blobs = {f"redis:{s.port}": redis_blobs(s.client()) for s in servers if s.proc is not None}
    logs = {
        str(p): [p.read_bytes()]
        for p in logs_under.rglob("*.log")
        if p.is_file() and "fakecloud" not in p.name
    }
    return leaks(secrets, {**blobs, **logs})

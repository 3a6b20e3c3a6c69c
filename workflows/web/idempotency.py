"""``Idempotency-Key``: a retried POST gets the first answer and starts nothing new, for 24 hours.

Scoped to the API key that sent it (two services may pick the same string). The first request claims the
key (SET NX) before it does anything; a retry that arrives while the first is still working is told so
(409) rather than run twice; the same key with another body is refused (422), as a client bug. When the
first attempt certainly started nothing (no worker took it: it expired unrun), the claim is released so a
retry may try again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from workers.errors import BadInput

__all__ = ["Claim", "IdempotencyStore", "InProgress", "KeyReused", "check_key"]

TTL = 24 * 3600
PENDING_TTL = 300  # a first attempt that dies mid-way frees its key after this long


class InProgress(BadInput):
    """The first request with this key has not answered yet."""


class KeyReused(BadInput):
    """The key came before with a different request."""


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise BadInput("Idempotency-Key must be 1-255 printable characters", "Idempotency-Key")
    return value


class Claim:
    """One request's hold on its key: ``answer`` is the stored first answer when this is a retry."""

    def __init__(self, store: IdempotencyStore, key: str | None, body: str, answer: dict[str, Any] | None):
        self.store, self.key, self.body, self.answer = store, key, body, answer

    def finish(self, status: int, content: Any) -> None:
        if self.key is not None:
            record = {"state": "done", "body": self.body, "status": status, "content": content}
            self.store.redis.set(self.key, json.dumps(record), ex=TTL)

    def release(self) -> None:
        if self.key is not None:
            self.store.redis.delete(self.key)


class IdempotencyStore:
    def __init__(self, client: redis.Redis, prefix: str = "hf") -> None:
        self.redis = client
        self.prefix = prefix

    def claim(self, who: str, key: str | None, method: str, path: str, body: bytes) -> Claim:
        """Claim ``key`` for this request, or return the first answer; refuse a reuse or a race."""
        digest = hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()
        if key is None:
            return Claim(self, None, digest, None)
        rkey = f"{self.prefix}:idem:" + hashlib.sha256(f"{who}\n{key}".encode()).hexdigest()
        pending = json.dumps({"state": "pending", "body": digest})
        if self.redis.set(rkey, pending, nx=True, ex=PENDING_TTL):
            return Claim(self, rkey, digest, None)
        raw = self.redis.get(rkey)
        if raw is None:  # expired between the two calls: claim it again
            return self.claim(who, key, method, path, body)
        record = json.loads(raw)
        if record["body"] != digest:
            raise KeyReused(
                "this Idempotency-Key was used with a different request; use a new key for a new request",
                "Idempotency-Key",
            )
        if record["state"] == "pending":
            raise InProgress(
                "a request with this Idempotency-Key is still being answered; retry in a few seconds",
                "Idempotency-Key",
            )
        return Claim(self, None, digest, {"status": record["status"], "content": record["content"]})

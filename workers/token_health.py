"""What the API last said of each project's token, kept in Redis for the worker's healthcheck.

A healthcheck that asked the API would spend the project's rate budget every 30 s on every worker, so none
asks. The client's ``on_response`` hook hands every answer's status to ``TokenHealth.note`` instead:

- a 401 (``unauthorized``: the token was revoked, has expired or is wrong) marks the token rejected at once;
- a 2xx marks it accepted, which clears a rejection; written at most once per ``refresh`` by each process,
  so a busy worker adds no Redis command to its requests;
- any other status (404, 422, 423, 429, 5xx, ...) says nothing about the token and is not noted.

A mark is kept under the project's name and a hash of the token (``hf:token:<project>:<hash>``), never the
token itself: during a rotation the workers given the new token stay healthy while those still holding the
revoked one do not. The later answer wins (a Lua script compares their times), so a success that was slow
to be noted cannot hide a rejection that came after it. ``hcloud-flow health worker`` reads the mark with
``read_mark``; no mark yet (no request made) is not a failure.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis

__all__ = ["ACCEPTED", "REJECTED", "TokenHealth", "TokenMark", "read_mark", "token_key"]

log = logging.getLogger(__name__)

TokenState = Literal["accepted", "rejected"]
ACCEPTED: TokenState = "accepted"
REJECTED: TokenState = "rejected"

# The API's answer to a token it does not accept (reference: 401 ``unauthorized``).
_REJECTED_STATUS = 401
# How often a process notes "accepted" again while it keeps seeing successes: how long a rejection noted by
# another process (with the same token) can outlive a later success.
REFRESH = 60.0
# A mark lasts this long after its last answer: a worker idle for a month says nothing of its token.
KEEP = 30 * 86400.0

# KEYS[1] the mark; ARGV state, at, status, request, ttl seconds. Write unless a later answer is noted.
_NOTE = """
local noted = redis.call('HGET', KEYS[1], 'at')
if noted and tonumber(noted) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'at', ARGV[2], 'status', ARGV[3], 'request', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def token_key(project: str, token: str, prefix: str = "hf") -> str:
    """Return the Redis key of a project's token mark: named by a hash, never by the token."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"{prefix}:token:{project}:{digest}"


@dataclass(frozen=True)
class TokenMark:
    """The last answer noted for a token: its verdict, when it came (UNIX time), its status and request."""

    state: TokenState
    at: float
    status: int
    request: str


class TokenHealth:
    """Notes what the API's answers say of one project's token (the HTTP client's ``on_response`` hook)."""

    def __init__(
        self,
        client: redis.Redis,
        project: str,
        token: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh: float = REFRESH,
        keep: float = KEEP,
        prefix: str = "hf",
    ) -> None:
        self.redis = client
        self.project = project
        self.key = token_key(project, token, prefix)
        self.clock = clock
        self.refresh = refresh
        self.keep = keep
        self._note = client.register_script(_NOTE)
        self._lock = threading.Lock()
        self._accepted_at: float | None = None  # when this process last wrote "accepted"

    def note(self, method: str, path: str, status: int) -> None:
        """Note one answer of the API (every answer passes here: keep it cheap, and never raise)."""
        now = self.clock()
        if status == _REJECTED_STATUS:
            with self._lock:
                self._accepted_at = None  # the next success is written at once, clearing this
            self._write(REJECTED, now, status, method, path)
        elif 200 <= status < 300:
            with self._lock:
                if self._accepted_at is not None and now - self._accepted_at < self.refresh:
                    return
                self._accepted_at = now
            self._write(ACCEPTED, now, status, method, path)

    def _write(self, state: TokenState, at: float, status: int, method: str, path: str) -> None:
        try:
            self._note(keys=[self.key], args=[state, repr(at), status, f"{method} {path}", int(self.keep)])
        except redis.RedisError as exc:
            # The request itself went through; the next answer notes the token again.
            log.debug("token health of project %s not noted: %s", self.project, exc)
            with self._lock:
                self._accepted_at = None

    def mark(self) -> TokenMark | None:
        """Return the last answer noted for this token by any process, or None."""
        return _mark(self.redis, self.key)


def read_mark(client: redis.Redis, project: str, token: str, prefix: str = "hf") -> TokenMark | None:
    """Return the last answer noted for a project's token by any process, or None if none was."""
    return _mark(client, token_key(project, token, prefix))


def _mark(client: redis.Redis, key: str) -> TokenMark | None:
    raw = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
    if raw.get("state") not in (ACCEPTED, REJECTED):
        return None
    state: TokenState = ACCEPTED if raw["state"] == ACCEPTED else REJECTED
    return TokenMark(state, float(raw.get("at") or 0), int(raw.get("status") or 0), raw.get("request", ""))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Who is calling: an API key in ``Authorization: Bearer KEY``, or, for the dashboard's pages (reads only),
the session a login form set. A session is a random id in an HttpOnly cookie, mapped in Redis to the key's
name and hash (never the key) for 12 hours; it ends when that key leaves the key file (even if a key of the
same name is made again). Writes always need the Bearer header, so a page cannot be made to write on a
visitor's behalf (no CSRF surface)."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Annotated, Any

import redis
from fastapi import Depends, Request

from .keys import ApiKey

__all__ = ["SESSION_COOKIE", "AuthError", "Operator", "Sessions", "Viewer", "operator", "viewer", "who"]

SESSION_COOKIE = "hf_session"
SESSION_TTL = 12 * 3600


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Sessions:
    def __init__(self, client: redis.Redis, prefix: str = "hf") -> None:
        self.redis, self.prefix = client, prefix

    def _key(self, sid: str) -> str:
        return f"{self.prefix}:web:session:" + hashlib.sha256(sid.encode()).hexdigest()

    def open(self, key: ApiKey, key_digest: str) -> str:
        sid = secrets.token_urlsafe(32)
        record = {"name": key.name, "role": key.role, "key_sha256": key_digest}
        self.redis.set(self._key(sid), json.dumps(record), ex=SESSION_TTL)
        return sid

    def get(self, sid: str) -> tuple[str, str] | None:
        """Return the session's key name and the hash of the key it was opened with."""
        raw = self.redis.get(self._key(sid)) if sid and len(sid) < 200 else None
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        return str(data["name"]), str(data.get("key_sha256", ""))

    def close(self, sid: str) -> None:
        self.redis.delete(self._key(sid))


def authenticate(request: Request) -> ApiKey:
    """Return the caller's key (a removed key stops working at once: the key file is read when it changes)."""
    services = request.app.state.services
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        found = services.keys.check(token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            raise AuthError(401, "the API key is not valid (Authorization: Bearer KEY)")
        return found
    if request.method in ("GET", "HEAD"):
        sid = request.cookies.get(SESSION_COOKIE)
        session = services.sessions.get(sid) if sid else None
        # The key behind a session must still be in the file, unchanged: removing it ends its sessions.
        key = services.keys.current(*session) if session is not None else None
        if key is not None:
            return key
    raise AuthError(401, "an API key is needed: Authorization: Bearer KEY (`hcloud-flow apikey add`)")


def viewer(request: Request) -> ApiKey:
    return authenticate(request)


def operator(request: Request) -> ApiKey:
    key = authenticate(request)
    if not key.may("operator"):
        raise AuthError(403, f"the key {key.name!r} is a viewer key; this needs an operator key")
    return key


# Route parameters: the caller's key, checked for the role the route needs.
Viewer = Annotated[ApiKey, Depends(viewer)]
Operator = Annotated[ApiKey, Depends(operator)]


def who(key: ApiKey) -> str:
    """What a write records as who did it."""
    return f"apikey:{key.name}"

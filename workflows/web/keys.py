"""API keys of the web service: a JSON file holding each key's name, role and SHA-256, never the key.

A key is 32 random bytes (``secrets.token_urlsafe``), so a fast hash is enough: nobody can search a space of
2^256 to invert it, and checking one per request must be cheap. ``check`` compares against every stored hash
with ``hmac.compare_digest`` and never stops early, so the time it takes says nothing about which key, or
which character, was close. The file (``HCLOUD_FLOW_API_KEYS_FILE``) is written atomically, mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workers.errors import BadInput, ConfigError

__all__ = ["ROLES", "ApiKey", "KeyFile", "digest"]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
_PREFIX = "hfk_"  # says what a leaked string is (secret scanners key on such prefixes)


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """Tell whether this key holds ``role`` (an operator may do what a viewer may)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(key: str) -> str:
    """The hash the key file keeps of a key (and a session keeps of the key it was opened with)."""
    return _digest(key)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyFile:
    """The key file: add, list, remove, check. Re-read when it changes, so a removed key stops at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[float, int] | None = None
        self._entries: list[dict[str, str]] = []

    def _load(self) -> list[dict[str, str]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, []
            return []
        if self._seen != (stat.st_mtime, stat.st_size):
            try:
                data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the API key file {self.path}: {exc}") from exc
            if not isinstance(data, dict) or not isinstance(data.get("keys", []), list):
                # Valid JSON of another shape ([] or {"keys": null}) was a traceback at start and a plain
                # 500 on every request while the service ran (an outside test).
                raise ConfigError(f'the API key file {self.path} is not {{"keys": [...]}}; fix or remove it')
            self._entries = [e for e in data.get("keys", []) if isinstance(e, dict)]
            self._seen = (stat.st_mtime, stat.st_size)
        return self._entries

    def _save(self, entries: list[dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"keys": entries}, fh, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._seen = None

    def add(self, name: str, role: str) -> str:
        """Store a new key's hash under ``name`` with ``role``; return the key (shown once, never stored)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadInput("key names are 1-63 letters, digits, '.', '_', '-' or '@'", "name")
        if role not in ROLES:
            raise BadInput(f"role must be one of {', '.join(ROLES)}, not {role!r}", "role")
        entries = self._load()
        if any(e.get("name") == name for e in entries):
            raise BadInput(f"a key named {name!r} exists; remove it first", "name")
        key = _PREFIX + secrets.token_urlsafe(32)
        entry = {"name": name, "role": role, "sha256": _digest(key), "created": f"{time.time():.0f}"}
        self._save([*entries, entry])
        return key

    def list(self) -> list[dict[str, str]]:
        """Return the keys' names, roles and creation times (the hashes stay in the file)."""
        return [{k: e[k] for k in ("name", "role", "created") if k in e} for e in self._load()]

    def remove(self, name: str) -> None:
        entries = self._load()
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) == len(entries):
            from workers.errors import NotFound

            raise NotFound(f"no API key named {name!r}", "name")
        self._save(kept)

    def current(self, name: str, digest: str) -> ApiKey | None:
        """Return the key called ``name`` if the file still holds it with this hash (a session opened with
        a key that was removed, or removed and made again under the same name, ends)."""
        for entry in self._load():
            if entry.get("name") == name and entry.get("role") in ROLES:
                same = hmac.compare_digest(str(entry.get("sha256", "")), digest)
                return ApiKey(name, entry["role"]) if same else None  # type: ignore[arg-type]
        return None

    def check(self, key: str | None) -> ApiKey | None:
        """Return the key's name and role, or None; the same work whatever the key (no early exit)."""
        digest = _digest(key or "")
        found: ApiKey | None = None
        for entry in self._load():
            if hmac.compare_digest(digest, str(entry.get("sha256", ""))) and key:
                role = entry.get("role")
                # A role written by hand that we do not know opens nothing (a session refuses it too).
                found = ApiKey(str(entry.get("name")), role) if role in ROLES else None
        return found

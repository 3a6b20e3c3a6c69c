"""Seal root passwords before they touch Redis; open them only with the configured key.

Fernet (from ``cryptography``) gives authenticated encryption with a key that is one urlsafe base64
string, easy to pass through an environment variable. With no key configured a password is dropped and
the result says so: a secret we cannot protect is better lost than stored in plaintext.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretError

__all__ = ["DROPPED_NOTICE", "generate_key", "open_sealed", "seal"]

DROPPED_NOTICE = "root password dropped: no HCLOUD_FLOW_SECRET_KEY is configured to seal it"


def generate_key() -> str:
    """Return a new sealing key for HCLOUD_FLOW_SECRET_KEY."""
    return Fernet.generate_key().decode()


def seal(secret: str | None, key: str | None) -> dict[str, Any] | None:
    """Return ``{"sealed": token}`` for a secret, a drop notice without a key, or None for no secret."""
    if secret is None:
        return None
    if not key:
        return {"sealed": None, "notice": DROPPED_NOTICE}
    return {"sealed": Fernet(key.encode()).encrypt(secret.encode()).decode()}


def open_sealed(sealed: dict[str, Any] | None, key: str | None) -> str:
    """Return the plaintext of a sealed secret, or raise SecretError saying why it cannot be opened."""
    if not sealed or not sealed.get("sealed"):
        notice = (sealed or {}).get("notice") or "no secret was recorded"
        raise SecretError(notice)
    if not key:
        raise SecretError("set HCLOUD_FLOW_SECRET_KEY to the key the secret was sealed with")
    try:
        return Fernet(key.encode()).decrypt(sealed["sealed"].encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretError("the configured HCLOUD_FLOW_SECRET_KEY does not open this secret") from exc

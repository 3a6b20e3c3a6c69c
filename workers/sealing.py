"""Seal root passwords before they touch Redis; open them only with the configured key.

Fernet (from ``cryptography``) gives authenticated encryption with a key that is one urlsafe base64
string, easy to pass through an environment variable. With no key configured a password is dropped and
the result says so: a secret we cannot protect is better lost than stored in plaintext.

Rotation: the setting may hold several keys, comma-separated, newest first. The first seals; every one
opens (a ``MultiFernet``), so passwords sealed before a rotation stay readable until they expire with their
run records, after which the old key can go.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import SecretError

__all__ = ["DROPPED_NOTICE", "generate_key", "keyring", "open_sealed", "seal"]

DROPPED_NOTICE = "root password dropped: no HCLOUD_FLOW_SECRET_KEY is configured to seal it"


def generate_key() -> str:
    """Return a new sealing key for HCLOUD_FLOW_SECRET_KEY."""
    return Fernet.generate_key().decode()


def keyring(key: str) -> MultiFernet:
    """Return the keys of a setting (comma-separated, newest first); raise ValueError for a bad one."""
    keys = [k.strip() for k in key.split(",") if k.strip()]
    if not keys:
        raise ValueError("no key")
    return MultiFernet([Fernet(k.encode()) for k in keys])


def seal(secret: str | None, key: str | None) -> dict[str, Any] | None:
    """Return ``{"sealed": token}`` for a secret, a drop notice without a key, or None for no secret."""
    if secret is None:
        return None
    if not key:
        return {"sealed": None, "notice": DROPPED_NOTICE}
    return {"sealed": keyring(key).encrypt(secret.encode()).decode()}


def open_sealed(sealed: dict[str, Any] | None, key: str | None) -> str:
    """Return the plaintext of a sealed secret, or raise SecretError saying why it cannot be opened."""
    if not sealed or not sealed.get("sealed"):
        notice = (sealed or {}).get("notice") or "no secret was recorded"
        raise SecretError(notice)
    if not key:
        raise SecretError("set HCLOUD_FLOW_SECRET_KEY to the key the secret was sealed with")
    try:
        return keyring(key).decrypt(sealed["sealed"].encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretError(
            "no key in HCLOUD_FLOW_SECRET_KEY opens this secret (during a rotation, keep the old key after "
            "the new one, comma-separated)"
        ) from exc

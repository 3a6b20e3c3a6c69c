"""What is kept of a rebuild's user data (cloud-init text, which often holds a password or a key): its
fingerprint. A module of its own, so that the CLI and the stores keep to it without importing Celery's
result backend (workers/result_backend.py applies it to stored results)."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["fingerprint", "without_user_data"]

# user_data sits at the top of a rebuild step's kwargs, or in the params of a submission, job or window.
_DEPTH = 4


def fingerprint(text: str) -> str:
    """Return what is kept of user data: enough to tell two apart, nothing of the text."""
    data = text.encode("utf-8", "surrogatepass")
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]} ({len(data)} bytes)"


def without_user_data(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every ``user_data`` text a few levels down replaced by its fingerprint."""
    if depth > _DEPTH:
        return value
    if isinstance(value, dict):
        return {
            k: fingerprint(v) if k == "user_data" and isinstance(v, str) else without_user_data(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [without_user_data(v, depth + 1) for v in value]
    return value

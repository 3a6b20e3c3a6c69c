"""What is kept of a rebuild's user data (cloud-init text, which often holds a password or a key): its
fingerprint. A module of its own, so that the CLI and the stores keep to it without importing Celery's
result backend (workers/result_backend.py applies it to stored results)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["fingerprint", "shown", "without_user_data"]

# user_data sits at the top of a rebuild step's kwargs, or in the params of a submission, job or window.
_DEPTH = 4


def fingerprint(text: str) -> str:
    """Return what is kept of user data: enough to tell two apart, nothing of the text."""
    data = text.encode("utf-8", "surrogatepass")
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]} ({len(data)} bytes)"


_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{16} \(\d+ bytes\)")


def shown(text: str) -> str:
    """Return user data as it may be shown: its fingerprint, or the fingerprint a record already keeps in
    its place (whose own fingerprint people saw: never what ``sha256sum`` of their file says; an outside
    test). A check of text given again still fingerprints it whatever it looks like (``fingerprint``)."""
    return text if _FINGERPRINT.fullmatch(text) else fingerprint(text)


def without_user_data(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every ``user_data`` text a few levels down replaced by its fingerprint."""
    if depth > _DEPTH:
        return value
    if isinstance(value, dict):
        return {
            k: shown(v) if k == "user_data" and isinstance(v, str) else without_user_data(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [without_user_data(v, depth + 1) for v in value]
    return value

"""Values read back from Redis, as text.

Our clients do not decode answers (kombu and Celery share them and want bytes), so every value read comes
back as bytes; redis-py's type hints say "bytes or str, or a list or tuple" for all of them. These say what we
know, once, instead of a ``.decode()`` the type checker cannot follow at every read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["text", "text_hash", "texts"]


def text(raw: Any) -> str:
    """Return one value read from Redis as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def texts(raws: Any) -> list[str]:
    """Return the members of a list, set or sorted-set answer as text."""
    return [text(r) for r in raws] if isinstance(raws, Iterable) else []


def text_hash(raw: Any) -> dict[str, str]:
    """Return a hash read with HGETALL as text keys and values."""
    return {text(k): text(v) for k, v in dict(raw).items()}

"""API ids as callers give them: an int, or ASCII digits; anything else names a resource. A module of its
own, so that the CLI and the input models tell an id from a name without importing the API client."""

from __future__ import annotations

__all__ = ["is_id"]


def is_id(value: object) -> bool:
    """Tell whether a reference is an API id (an int, or ASCII digits), not a name."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # str.isdigit() alone accepts "²" and other digits int() refuses or reads differently.
    return isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit()

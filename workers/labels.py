"""The API's label rule (reference §4.1), checked before anything is sent: one definition for all entries.

Used by workflow validation (CLI, Python API, ``hcloud_flow.submit``, Flower) and by the raw action tasks.
A key is an optional DNS-subdomain prefix (at most 253 characters) and ``/``, then a name of 1-63
characters, alphanumeric at both ends with ``-_.`` inside; a value is empty or follows the name rule. The
prefix ``hetzner.cloud/`` is the API's; ``hcloud-flow/`` is ours (the step label that finds a lost
answer's image again), so a user may not set it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import BadInput

__all__ = ["MAX_LABELS", "RESERVED_PREFIXES", "STEP_LABEL", "check_labels", "check_selector"]

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_PREFIX = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")
RESERVED_PREFIXES = ("hetzner.cloud", "hcloud-flow")
# The label each image a step makes carries: how a lost answer's image is found again, and how retention
# tells our snapshots from the rest.
STEP_LABEL = "hcloud-flow/step"
# The API documents no count; more than this many labels on one image is a mistake, not a wish.
MAX_LABELS = 64
# A selector longer than this is a mistake (every label of a server fits in less).
MAX_SELECTOR = 4096


def _key_problem(key: str, *, reserved: bool = True) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > 253 or not _PREFIX.match(prefix):
            return f"label key {key!r}: the prefix must be a DNS subdomain of at most 253 characters"
        if reserved and any(prefix == p or prefix.endswith("." + p) for p in RESERVED_PREFIXES):
            return f"label key {key!r}: the prefix {prefix}/ is reserved"
    if not _NAME.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 characters, letters or digits at both ends, "
            "with '-', '_' or '.' inside"
        )
    return None


def check_labels(labels: Any, field: str = "labels") -> dict[str, str]:
    """Return ``labels`` if the API would take them (and they avoid our reserved prefix), else refuse."""
    if not isinstance(labels, dict):
        raise BadInput(f"{field} must be an object of string keys to string values", field)
    if len(labels) > MAX_LABELS:
        raise BadInput(f"{field}: at most {MAX_LABELS} labels, not {len(labels)}", field)
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadInput(f"{field} must map strings to strings", field)
        problem = _key_problem(key)
        if problem is None and value and not _NAME.match(value):
            problem = (
                f"label {key!r}: the value must be empty or 1-63 characters, letters or digits at both "
                "ends, with '-', '_' or '.' inside"
            )
        if problem:
            raise BadInput(problem[:300], field)
    return dict(labels)


_WORD = r"[^\s!=(),]+"
_TERMS = (
    re.compile(rf"\s*!?\s*({_WORD})\s*\Z"),  # k, !k
    re.compile(rf"\s*({_WORD})\s*(?:==|!=|=)\s*([^\s!=(),]*)\s*\Z"),  # k=v, k==v, k!=v
    re.compile(rf"\s*({_WORD})\s+(?:in|notin)\s*\(([^()]*)\)\s*\Z"),  # k in (a,b), k notin (a,b)
)


def check_selector(selector: Any, field: str = "selector") -> str:
    """Return a label selector whose syntax is the API's (reference §4.1), else refuse it before it is kept.

    For windows, which keep a selector to use later: a broken one must fail when it is added, not at 3 a.m.
    """
    if not isinstance(selector, str):
        raise BadInput(
            f"the label selector must be a string, not {type(selector).__name__}; e.g. "
            "'env=staging,role in (web,api)'",
            field,
        )
    if not selector.strip():
        raise BadInput("the label selector is empty; e.g. 'env=staging,role in (web,api)'", field)
    terms, depth, start = [], 0, 0
    for i, char in enumerate(selector):  # commas inside ( ) belong to a set, not between terms
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth not in (0, 1):
            break
        if char == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    if len(selector) > MAX_SELECTOR:
        raise BadInput(f"the label selector is {len(selector)} characters; at most {MAX_SELECTOR}", field)
    for term in terms:
        match = next((m for p in _TERMS if (m := p.match(term))), None) if depth == 0 else None
        if match is None:
            raise BadInput(
                f"label selector {selector[:200]!r}: {term.strip()[:100]!r} is not a term the API takes "
                "(k, !k, k=v, k!=v, k in (a,b), k notin (a,b))",
                field,
            )
        # Keys and values as labels have them (the API refuses others, but only when the selector is used).
        problem = _key_problem(match.group(1), reserved=False)
        values = match.group(2).split(",") if match.lastindex and match.lastindex >= 2 else []
        bad = next((v.strip() for v in values if v.strip() and not _NAME.match(v.strip())), None)
        if problem is None and bad is not None:
            problem = f"label value {bad!r}: 1-63 characters, letters or digits at both ends, '-', '_', '.'"
        if problem:
            raise BadInput(f"label selector {selector[:100]!r}: {problem}"[:300], field)
    return selector

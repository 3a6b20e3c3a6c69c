"""Label rules and the label selector language of the public API.

Keys: an optional DNS-subdomain prefix (at most 253 characters) and ``/``, then a name of at most 63
characters, alphanumeric at both ends with ``-``, ``_``, ``.`` inside. Values: the same rule as a name, or
empty. The prefix ``hetzner.cloud/`` is reserved.

Selectors are comma-separated expressions that must all hold: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
``k in (v1,v2)``, ``k notin (v1,v2)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

from .exceptions import InvalidInput

__all__ = ["compile_selector", "label_key_problem", "label_value_problem", "validate_labels"]

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_PREFIX = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")

Predicate = Callable[[Mapping[str, str]], bool]


def label_key_problem(key: object) -> str | None:
    """Return what is wrong with a label key, or None when it is valid."""
    if not isinstance(key, str) or not key:
        return "label key must be a non-empty string"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > 253 or not _PREFIX.match(prefix):
            return f"label key prefix {prefix!r} must be a DNS subdomain of at most 253 characters"
        if prefix == "hetzner.cloud" or prefix.endswith(".hetzner.cloud"):
            return "label key prefix 'hetzner.cloud/' is reserved"
    if not _NAME.match(name):
        return (
            f"label key name {name!r} must be 1-63 characters, alphanumeric at both ends, "
            "with '-', '_' or '.' inside"
        )
    return None


def label_value_problem(value: object) -> str | None:
    """Return what is wrong with a label value, or None when it is valid."""
    if not isinstance(value, str):
        return "label value must be a string"
    if value and not _NAME.match(value):
        return (
            f"label value {value!r} must be empty or 1-63 characters, alphanumeric at both ends, "
            "with '-', '_' or '.' inside"
        )
    return None


def validate_labels(labels: object, field: str = "labels") -> dict[str, str]:
    """Return ``labels`` as a dict, or raise InvalidInput naming ``field`` and every problem."""
    if not isinstance(labels, dict):
        raise InvalidInput.field(field, "must be an object of string keys to string values")
    problems = [p for k, v in labels.items() for p in (label_key_problem(k), label_value_problem(v)) if p]
    if problems:
        raise InvalidInput({field: problems})
    return dict(labels)


_WORD = r"[^\s!=(),]+"
_ABSENT = re.compile(rf"\s*!\s*({_WORD})\s*\Z")
_SET = re.compile(rf"\s*({_WORD})\s+(in|notin)\s*\(([^()]*)\)\s*\Z")
_COMPARE = re.compile(rf"\s*({_WORD})\s*(==|!=|=)\s*([^\s!=(),]*)\s*\Z")
_PRESENT = re.compile(rf"\s*({_WORD})\s*\Z")


def _split_terms(selector: str) -> list[str]:
    # Commas inside "in (a,b)" separate values, not expressions.
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
        elif ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    if depth:
        raise ValueError("unbalanced '('")
    terms.append(selector[start:])
    return terms


def _checked_key(key: str) -> str:
    problem = label_key_problem(key)
    if problem:
        raise ValueError(problem)
    return key


def _checked_value(value: str) -> str:
    problem = label_value_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _term(term: str) -> Predicate:
    if m := _ABSENT.match(term):
        key = _checked_key(m[1])
        return lambda labels: key not in labels
    if m := _SET.match(term):
        key, op = _checked_key(m[1]), m[2]
        values = frozenset(_checked_value(v.strip()) for v in m[3].split(","))
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _COMPARE.match(term):
        key, op, value = _checked_key(m[1]), m[2], _checked_value(m[3])
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if m := _PRESENT.match(term):
        key = _checked_key(m[1])
        return lambda labels: key in labels
    raise ValueError(f"cannot parse expression {term.strip()!r}")


@lru_cache(maxsize=256)
def compile_selector(selector: str, field: str = "label_selector") -> Predicate:
    """Compile a selector into a predicate over a labels dict; raise InvalidInput if it is malformed."""
    try:
        if not selector.strip():
            raise ValueError("selector is empty")
        predicates = [_term(t) for t in _split_terms(selector)]
    except ValueError as exc:
        raise InvalidInput.field(field, f"invalid label selector {selector!r}: {exc}") from None
    return lambda labels: all(p(labels) for p in predicates)

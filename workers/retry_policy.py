"""Which API failures are retried, how long to wait, and when to give up: the policy as data.

Keyed on the API's ``error.code`` (reference §5: the HTTP status of a code has changed over the years),
with the bare gateway statuses for answers that carry no JSON. The sets below are the whole policy;
``should_retry`` is the one predicate over them and the table test in tests/unit covers it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import requests

from .errors import APIError, TransportError

__all__ = [
    "AMBIGUOUS_CODES",
    "FAIL_FAST_CODES",
    "NOT_PROCESSED_CODES",
    "RETRY_CODES",
    "RetryPolicy",
    "should_retry",
]

# The request was refused before it did anything: safe to send again, POSTs included.
NOT_PROCESSED_CODES = frozenset({"conflict", "rate_limit_exceeded", "unavailable", "robot_unavailable"})

# A gateway or backend timeout: a GET is safe to repeat, but a POST may have started an action behind
# the error, so the caller must look for that action before sending the POST again.
AMBIGUOUS_CODES = frozenset(
    {"bad_gateway", "timeout", "server_error", "http_500", "http_502", "http_503", "http_504"}
)

RETRY_CODES = NOT_PROCESSED_CODES | AMBIGUOUS_CODES

# Retrying these cannot help; they say what the caller must change. Listed for the table test and the
# docs: any code in neither set also fails at once, because unknown codes must not loop.
FAIL_FAST_CODES = frozenset(
    {
        "unauthorized",
        "token_readonly",
        "forbidden",
        "not_found",
        "invalid_input",
        "json_error",
        "protected",
        "locked",  # handled a level up: the step waits for the blocking action, then tries again
        "maintenance",
        "resource_limit_exceeded",
        "uniqueness_error",
        "unsupported_error",
        "service_error",
        "method_not_allowed",
        "deprecated_api_endpoint",
    }
)


def should_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """Tell whether a failed request may be sent again as it is."""
    if isinstance(exc, APIError):
        if exc.code in NOT_PROCESSED_CODES:
            return True
        return idempotent and exc.code in AMBIGUOUS_CODES
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        # Connect errors and connect timeouts never reached the API.
        return True
    if isinstance(exc, requests.ReadTimeout | TransportError):
        return idempotent
    return False


def is_ambiguous(exc: BaseException) -> bool:
    """Tell whether a failed POST may nevertheless have started its action."""
    if isinstance(exc, APIError):
        return exc.code in AMBIGUOUS_CODES
    return isinstance(exc, requests.ReadTimeout | TransportError)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the request retry loop: the official clients' shape (1 s x 2^n, jittered, capped)."""

    attempts: int = 6
    base: float = 1.0
    multiplier: float = 2.0
    cap: float = 30.0
    max_total: float = 120.0

    def backoff(self, attempt: int, rnd: random.Random | None = None) -> float:
        """Return the jittered wait before retry number ``attempt`` (1 for the first retry)."""
        top = min(self.cap, self.base * self.multiplier ** (attempt - 1))
        return (rnd or random).uniform(self.base, max(top, self.base))

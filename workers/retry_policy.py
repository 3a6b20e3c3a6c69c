"""Which API failures are retried, how long to wait, and when to give up: the policy as data.

A failure is classified by what the API may have done with the request (STYLE lesson 17):

    not sent        the request never reached the API: connection refused, DNS failure, connect timeout.
                    Safe to send again, POSTs included.
    not processed   the API answered with a code it documents as "nothing was done, try again"
                    (``NOT_PROCESSED_CODES``). Safe to send again, POSTs included.
    ambiguous       the request was (or may have been) written and no trustworthy answer came back:
                    connection reset or aborted after sending, read timeout, a gateway or backend error
                    (``AMBIGUOUS_CODES``). A GET is repeated; a POST may have started its action, so the
                    caller must look for that action before it sends the POST again.
    refused         any other API error: the API did not act, and repeating cannot help.

Codes are keyed on the API's ``error.code`` (reference §5: the HTTP status of a code has changed over the
years), with the bare gateway statuses for answers that carry no JSON. The sets below are the whole
policy; ``classify`` is the one function over them and the table test in tests/unit covers it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import requests
from urllib3.exceptions import ConnectTimeoutError

from .errors import APIError, TransportError

__all__ = [
    "AMBIGUOUS_CODES",
    "FAIL_FAST_CODES",
    "NOT_PROCESSED_CODES",
    "RETRY_CODES",
    "Outcome",
    "RetryPolicy",
    "classify",
    "is_ambiguous",
    "never_sent",
    "should_retry",
]

# The API refused the request before it did anything, and says to try again: safe to resend, POSTs too.
NOT_PROCESSED_CODES = frozenset({"conflict", "rate_limit_exceeded", "unavailable", "robot_unavailable"})

# A gateway or backend error: a GET is safe to repeat, but a POST may have started an action behind the
# error, so the caller must look for that action before sending the POST again.
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
        "locked",  # handled a level up: the step attaches to its own action or waits for the other one
        "maintenance",
        "resource_limit_exceeded",
        "uniqueness_error",
        "unsupported_error",
        "service_error",
        "method_not_allowed",
        "deprecated_api_endpoint",
    }
)


class Outcome(Enum):
    """What the API may have done with a request that failed."""

    NOT_SENT = "not_sent"
    NOT_PROCESSED = "not_processed"
    AMBIGUOUS = "ambiguous"
    REFUSED = "refused"
    BUG = "bug"  # not a transport or API failure at all: never retried


def never_sent(exc: BaseException) -> bool:
    """Tell whether a requests failure certainly happened before any byte of the request was written.

    urllib3 raises ConnectTimeoutError (and its subclasses NewConnectionError and NameResolutionError,
    i.e. refused, unreachable, DNS) only while opening the connection. Everything else — a reset or
    "Connection aborted" on a reused keep-alive connection, a read timeout, a broken chunked answer — may
    come after the API read the request.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.ReadTimeout):
        return False
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:  # the urllib3 cause sits in args[0].reason, or in the exception chain
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectTimeoutError):
            return True
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return False


def classify(exc: BaseException) -> Outcome:
    """Return what the API may have done with the request that raised ``exc``."""
    if isinstance(exc, APIError):
        if exc.code in NOT_PROCESSED_CODES:
            return Outcome.NOT_PROCESSED
        if exc.code in AMBIGUOUS_CODES:
            return Outcome.AMBIGUOUS
        return Outcome.REFUSED
    if isinstance(exc, TransportError):
        return Outcome.AMBIGUOUS if exc.maybe_sent else Outcome.NOT_SENT
    if isinstance(exc, requests.RequestException):
        return Outcome.NOT_SENT if never_sent(exc) else Outcome.AMBIGUOUS
    return Outcome.BUG


def should_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """Tell whether a failed request may be sent again as it is."""
    outcome = classify(exc)
    if outcome in (Outcome.NOT_SENT, Outcome.NOT_PROCESSED):
        return True
    return idempotent and outcome is Outcome.AMBIGUOUS


def is_ambiguous(exc: BaseException) -> bool:
    """Tell whether a failed POST may nevertheless have started its action."""
    return classify(exc) is Outcome.AMBIGUOUS


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

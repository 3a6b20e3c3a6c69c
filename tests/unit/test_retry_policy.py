"""The retry predicate against the table of API error codes (reference §5.2)."""

from __future__ import annotations

import random

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

from workers.errors import APIError, TransportError
from workers.retry_policy import RetryPolicy, is_ambiguous, should_retry


def wrapped(reason: Exception) -> requests.ConnectionError:
    """Return a ConnectionError as requests raises it: urllib3's MaxRetryError with the cause as reason."""
    return requests.ConnectionError(MaxRetryError(None, "/x", reason))  # type: ignore[arg-type]


def api(code: str, status: int = 400) -> APIError:
    return APIError(code, "msg", status)


@pytest.mark.parametrize(
    ("exc", "get", "post", "ambiguous"),
    [
        (api("conflict", 409), True, True, False),
        (api("rate_limit_exceeded", 429), True, True, False),
        (api("unavailable", 503), True, True, False),
        (api("bad_gateway", 502), True, False, True),
        (api("timeout", 504), True, False, True),
        (api("http_502", 502), True, False, True),
        (api("http_503", 503), True, False, True),
        (api("http_504", 504), True, False, True),
        (api("locked", 423), False, False, False),
        (api("protected", 423), False, False, False),
        (api("unauthorized", 401), False, False, False),
        (api("forbidden", 403), False, False, False),
        (api("not_found", 404), False, False, False),
        (api("invalid_input", 422), False, False, False),
        (api("json_error", 400), False, False, False),
        (api("some_code_nobody_documented", 400), False, False, False),
        # Certainly before sending: refused, DNS, connect timeout.
        (wrapped(NewConnectionError(None, "Connection refused")), True, True, False),  # type: ignore[arg-type]
        (wrapped(NameResolutionError("api", None, OSError("no such host"))), True, True, False),  # type: ignore[arg-type]
        (requests.ConnectTimeout("connect"), True, True, False),
        # After the request may have been written: the API may have acted.
        (
            requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104))),
            True,
            False,
            True,
        ),
        (wrapped(ProtocolError("Connection aborted.", OSError("RemoteDisconnected"))), True, False, True),
        (requests.ConnectionError("something we cannot place"), True, False, True),
        (requests.ReadTimeout("read"), True, False, True),
        (requests.exceptions.ChunkedEncodingError("cut mid-answer"), True, False, True),
        (TransportError("cut", "POST", "/x"), True, False, True),
        (TransportError("refused", "POST", "/x", False), True, True, False),
        (ValueError("a bug"), False, False, False),
    ],
)
def test_retry_table(exc: BaseException, get: bool, post: bool, ambiguous: bool) -> None:
    assert should_retry(exc, idempotent=True) is get
    assert should_retry(exc, idempotent=False) is post
    assert is_ambiguous(exc) is ambiguous


def test_backoff_is_jittered_bounded_and_growing() -> None:
    policy = RetryPolicy(base=1.0, multiplier=2.0, cap=8.0)
    rnd = random.Random(7)
    waits = [[policy.backoff(n, rnd) for _ in range(200)] for n in range(1, 7)]
    assert all(1.0 <= w <= 1.0 for w in waits[0])
    assert all(1.0 <= w <= 2.0 for w in waits[1])
    assert all(1.0 <= w <= 8.0 for ws in waits[3:] for w in ws)
    assert max(waits[5]) > 4.0  # it does grow towards the cap


def test_errors_survive_celery_json_round_trip() -> None:
    # Celery rebuilds an exception as type(exc)(*exc.args): the fields must come back unchanged.
    from workers.errors import ActionFailed, WaitTimeout

    for exc in (
        APIError("locked", "busy", 423, {"x": 1}, "abc", "POST", "/servers/1/actions/poweron"),
        ActionFailed(1, "shutdown", 7, "action_failed", "Action failed"),
        WaitTimeout(1, "shutdown", 7, "the off state", 30.0),
    ):
        again = type(exc)(*exc.args)
        assert str(again) == str(exc)
        assert again.args == exc.args

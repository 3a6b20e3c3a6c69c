"""Errors that fakecloud answers with, one class per public API error code.

Each carries what the HTTP layer needs to render ``{"error": {"code", "message", "details"}}``::

    FakeCloudError (status, code, message, details)
    ├── JsonError            400 json_error
    ├── Unauthorized         401 unauthorized
    ├── NotFound             404 not_found
    ├── MethodNotAllowed     405 method_not_allowed
    ├── Conflict             409 conflict
    ├── InvalidInput         422 invalid_input      details.fields = [{"name", "messages"}]
    ├── UnsupportedError     422 unsupported_error
    ├── Locked               423 locked
    ├── Protected            423 protected
    ├── RateLimitExceeded    429 rate_limit_exceeded
    ├── ServerError          500 server_error
    ├── Unavailable          503 unavailable
    └── Timeout              504 timeout

The 502 fault is not here: a gateway answers it with HTML, not with an API error body.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "FakeCloudError",
    "InvalidInput",
    "JsonError",
    "Locked",
    "MethodNotAllowed",
    "NotFound",
    "Protected",
    "RateLimitExceeded",
    "ServerError",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "UniquenessError",
    "UnsupportedError",
]


class FakeCloudError(Exception):
    """Raised by a handler or the backend to answer with an API error body."""

    status = 500
    code = "server_error"
    default_message = "Internal Server Error"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        """Return the public API error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def headers(self) -> list[tuple[str, str]]:
        """Return HTTP headers this error adds to the answer (none by default)."""
        return []


class JsonError(FakeCloudError):
    """Raised when the request body is not valid JSON (or not a JSON object)."""

    status, code, default_message = 400, "json_error", "JSON is invalid"


class Unauthorized(FakeCloudError):
    """Raised when the Bearer token is missing or wrong."""

    status, code, default_message = 401, "unauthorized", "unable to authenticate"


class NotFound(FakeCloudError):
    """Raised when a resource or a route does not exist."""

    status, code, default_message = 404, "not_found", "not found"


class MethodNotAllowed(FakeCloudError):
    """Raised when the route exists but not for this HTTP method."""

    status, code, default_message = 405, "method_not_allowed", "method not allowed"

    def __init__(self, message: str | None = None, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> list[tuple[str, str]]:
        """Return the ``Allow`` header that RFC 9110 requires on a 405."""
        return [("Allow", ", ".join(self.allowed))] if self.allowed else []


class Conflict(FakeCloudError):
    """Raised by the conflict fault, and by control calls that do not fit the current setup."""

    status, code, default_message = 409, "conflict", "resource has changed during the request, please retry"


class UniquenessError(FakeCloudError):
    """Raised when a field that must be unique in the project is not (SPEC ``uniqueness_error``)."""

    status, code = 409, "uniqueness_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, {"fields": [{"name": field}]})


class InvalidInput(FakeCloudError):
    """Raised when a field fails validation; ``details.fields`` names each field and what is wrong."""

    status, code = 422, "invalid_input"

    def __init__(self, fields: dict[str, list[str]] | list[tuple[str, str]]) -> None:
        pairs = list(fields.items()) if isinstance(fields, dict) else [(n, [m]) for n, m in fields]
        detail = [{"name": name, "messages": list(msgs)} for name, msgs in pairs]
        first_name, first_msgs = pairs[0]
        message = f"invalid input in field '{first_name}': {first_msgs[0]}"
        if len(pairs) > 1:
            message = "invalid input in fields " + ", ".join(f"'{n}'" for n, _ in pairs)
        super().__init__(message, {"fields": detail})

    @classmethod
    def field(cls, name: str, message: str) -> InvalidInput:
        """Build the error for one field with one message."""
        return cls({name: [message]})


class UnsupportedError(FakeCloudError):
    """Raised when the resource cannot do the action in its current state."""

    status, code, default_message = 422, "unsupported_error", "action is not supported for this resource"


class Locked(FakeCloudError):
    """Raised when another action is still running on the server."""

    status, code, default_message = 423, "locked", "server is locked, there is already an Action running"


class Protected(FakeCloudError):
    """Raised when the resource's protection forbids the action (a server's rebuild, an image's delete)."""

    status, code, default_message = 423, "protected", "resource is protected"


class RateLimitExceeded(FakeCloudError):
    """Raised when the project's token bucket is empty (or the 429 fault fires)."""

    status, code = 429, "rate_limit_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(f"limit of {limit} requests per hour reached")


class ServerError(FakeCloudError):
    """Raised when fakecloud itself fails; a bug, never a fault."""


class Unavailable(FakeCloudError):
    """Raised by the 503 fault."""

    status, code, default_message = 503, "unavailable", "service is currently unavailable"


class Timeout(FakeCloudError):
    """Raised by the 504 fault."""

    status, code, default_message = 504, "timeout", "request could not be answered in time, please retry"

"""Every error hcloud-flow raises, under one root.

    HcloudFlowError                   root: catch this to catch everything of ours
    ├── APIError                      the API answered with an error (code, message, status, correlation id)
    ├── TransportError                no usable answer: connection refused, reset, read timeout
    │                                 (``maybe_sent`` tells whether the API may have read the request)
    ├── ActionFailed                  an action ended with status "error"
    ├── WaitTimeout                   a wait passed its deadline before the action or state was reached
    │   └── AcpiIgnored               the guest ignored an ACPI signal for the grace period, no force allowed
    ├── BadInput                      a request was refused before anything was enqueued or sent
    │   ├── NotFound                  the run, job or window named does not exist
    │   ├── Conflict                  an edit made from a record that changed meanwhile
    │   └── Unsettled                 the server is on its way between running and off
    ├── Blocked                       423 locked: another action runs on the server (the step waits for it)
    ├── StepInProgress                another delivery of the same step is posting right now
    ├── ServerBusy                    another run holds the server's lock
    ├── RunCancelled                  the run was cancelled before this step
    ├── RateBudgetExhausted           the shared request budget is empty for longer than the caller waits
    ├── ConfigError                   a required setting is missing or malformed (e.g. no HCLOUD_TOKEN)
    ├── StillRunning                  a caller stopped waiting for a run or job that goes on
    ├── RecordLost                    a run or job record vanished from Redis while a caller waited on it
    └── SecretError                   a sealed secret cannot be opened (no key, wrong key)

Errors cross Celery's JSON result backend, which rebuilds them from ``type(exc)(*exc.args)``. So every
constructor takes plain JSON values in a fixed positional order and passes them all to ``super().__init__``;
no live objects (responses, sessions) are kept on them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AcpiIgnored",
    "ActionFailed",
    "BadInput",
    "Blocked",
    "ConfigError",
    "Conflict",
    "HcloudFlowError",
    "NotFound",
    "NotTaken",
    "RateBudgetExhausted",
    "RecordLost",
    "RunCancelled",
    "SecretError",
    "ServerBusy",
    "StepInProgress",
    "StillRunning",
    "TransportError",
    "Unsettled",
    "WaitTimeout",
]


class HcloudFlowError(Exception):
    """Raised for anything hcloud-flow itself reports; the root of the tree above."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class APIError(HcloudFlowError):
    """Raised when the API answers with an error body or an error status.

    ``code`` is the API's ``error.code`` (or ``http_<status>`` for a body that is not the API's JSON, like a
    gateway's HTML page); retry decisions key on it, never on the HTTP status alone.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        details: Any = None,
        correlation_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(code, message, status, details, correlation_id, method, path)
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.correlation_id = correlation_id
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        corr = f", correlation id {self.correlation_id}" if self.correlation_id else ""
        return f"{where}{self.message} ({self.code}, HTTP {self.status}{corr})"


class TransportError(HcloudFlowError):
    """Raised when no answer could be read from the API (after the bounded retries)."""

    def __init__(
        self, message: str, method: str | None = None, path: str | None = None, maybe_sent: bool = True
    ) -> None:
        super().__init__(message, method, path, maybe_sent)
        self.message, self.method, self.path = message, method, path
        # False only when the failure certainly came before the request was written (refused, DNS,
        # connect timeout); anything else may have reached the API.
        self.maybe_sent = maybe_sent

    def __str__(self) -> str:
        return f"{self.method} {self.path}: {self.message}" if self.method else self.message


class ActionFailed(HcloudFlowError):
    """Raised when an action ends with status ``error``; names everything a support ticket needs."""

    def __init__(
        self, server_id: int, step: str, action_id: int, code: str, message: str, hint: str | None = None
    ) -> None:
        super().__init__(server_id, step, action_id, code, message, hint)
        self.server_id, self.step, self.action_id = server_id, step, action_id
        self.code, self.message, self.hint = code, message, hint

    def __str__(self) -> str:
        return (
            f"server {self.server_id}, step {self.step}: action {self.action_id} failed: "
            f"{self.message} ({self.code})" + (f"; {self.hint}" if self.hint else "")
        )


class WaitTimeout(HcloudFlowError):
    """Raised when a wait passes its deadline; the action (if any) may still be running at the API."""

    def __init__(
        self,
        server_id: int,
        step: str,
        action_id: int | None,
        waited_for: str,
        seconds: float,
        action_running: bool | None = None,
    ) -> None:
        super().__init__(server_id, step, action_id, waited_for, seconds, action_running)
        self.server_id, self.step, self.action_id = server_id, step, action_id
        self.waited_for, self.seconds = waited_for, seconds
        # True: the step's own action was still running at the API when the wait gave up (what the server
        # ends in is then that action's doing, not what the run last saw).
        self.action_running = action_running or None

    def __str__(self) -> str:
        action = f" (action {self.action_id})" if self.action_id else ""
        return (
            f"server {self.server_id}, step {self.step}{action}: gave up waiting for {self.waited_for} "
            f"after {self.seconds:.0f} s"
        )


class AcpiIgnored(WaitTimeout):
    """Raised when the guest ignored an ACPI signal for the grace period and no forced fallback is allowed."""

    def __str__(self) -> str:
        action = f" (action {self.action_id})" if self.action_id else ""
        return (
            f"server {self.server_id}, step {self.step}{action}: the guest ignored the ACPI signal: "
            f"the server did not reach {self.waited_for} within the {self.seconds:g} s grace period, "
            "and the forced power-off was not allowed (force=false, --no-force). Power it off with "
            f"'hcloud-flow run power-off --server {self.server_id}', give the guest a longer --grace, or run "
            "again without --no-force"
        )


class BadInput(HcloudFlowError):
    """Raised when input is refused before anything is enqueued; the message says what to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.message, self.field = message, field


class RecordLost(HcloudFlowError):
    """Raised when a run or job record a caller was waiting on vanished from Redis: not bad input, and what it
    started may still be under way on its servers."""

    def __str__(self) -> str:
        return (
            f"the record of {self.args[0]} is gone from Redis while we waited (Redis restarted without its "
            "data, or the record was deleted); what it started may still be under way: check its servers "
            "(`hcloud-flow servers`)"
        )


class NotTaken(HcloudFlowError):
    """Raised when no worker took a request before it expired: it will never run, nothing was started."""


class NotFound(BadInput):
    """Raised when a run, job or window named in a request does not exist (or has expired)."""

    @classmethod
    def record(cls, kind: str, ident: object, field: str) -> NotFound:
        """The refusal of a run or job id that Redis holds no record of, naming every reason there can be:
        after a Redis restart without its data, "unknown" alone had sent people looking for a typo."""
        return cls(
            f"no {kind} {ident!r} (unknown here, older than the retention period, or lost with Redis's data)",
            field,
        )


class Conflict(BadInput):
    """Raised when an edit was made from a record that changed meanwhile: written, it would undo it."""


class Unsettled(BadInput):
    """Raised when a workflow's steps depend on whether the server runs and it is neither running nor off."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message, "server")
        # Its arguments as given: Celery's JSON results rebuild an error from them (the field's "server"
        # had come back as the status).
        self.args = (message, status)
        self.status = status


class ServerBusy(HcloudFlowError):
    """Raised when a server is already held by another run."""

    def __init__(self, server_id: int, run_id: str) -> None:
        super().__init__(server_id, run_id)
        self.server_id, self.run_id = server_id, run_id

    def __str__(self) -> str:
        return f"server {self.server_id} is busy with run {self.run_id}; wait for it, or submit with --queue"


class RunCancelled(HcloudFlowError):
    """Raised when a step finds its run cancelled and stops the chain there."""

    def __init__(self, run_id: str, step: str) -> None:
        super().__init__(run_id, step)
        self.run_id, self.step = run_id, step

    def __str__(self) -> str:
        return f"run {self.run_id} was cancelled before step {self.step}"


class RateBudgetExhausted(HcloudFlowError):
    """Raised when a request would wait longer for the shared budget than its caller allows."""

    def __init__(self, wait: float, rate: float | None = None) -> None:
        super().__init__(wait, rate)
        self.wait = wait
        self.rate = rate  # tokens a second the budget refills at, when known

    def __str__(self) -> str:
        return f"the project's API budget is empty for another {self.wait:.1f} s"


class StillRunning(HcloudFlowError):
    """Raised when a caller's wait for a run or job ends before the run or job does; it goes on."""

    def __init__(self, what: str, state: str, seconds: float, follow: str) -> None:
        super().__init__(what, state, seconds, follow)
        self.what, self.state, self.seconds, self.follow = what, state, seconds, follow

    def __str__(self) -> str:
        return (
            f"{self.what} is still {self.state} after {self.seconds:g} s; it goes on: "
            f"follow it with `{self.follow}`"
        )


class ConfigError(HcloudFlowError):
    """Raised when a required setting is missing or malformed; the message names the variable."""


class SecretError(HcloudFlowError):
    """Raised when a sealed secret cannot be opened with the configured key."""


class Blocked(HcloudFlowError):
    """Raised when the API answered 423 locked: another action runs on the server."""

    def __init__(self, server_id: int, action_id: int | None) -> None:
        super().__init__(server_id, action_id)
        self.server_id, self.action_id = server_id, action_id

    def __str__(self) -> str:
        return f"server {self.server_id} is locked by running action {self.action_id}"


class StepInProgress(HcloudFlowError):
    """Raised when another delivery of the same step holds its claim right now."""

    def __init__(self, step_key: str) -> None:
        super().__init__(step_key)
        self.step_key = step_key

"""Request bodies of the HTTP API. Fleet jobs and windows are ``workflows.specs``' models themselves, so a
field means the same here as on the command line; these add what only a request carries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

__all__ = ["RetryRequest", "RunRequest", "WindowPatch"]


class RunRequest(BaseModel):
    """Start one workflow run on one server."""

    model_config = ConfigDict(extra="forbid")

    workflow: StrictStr = Field(description="workflow name (GET /api/v1/workflows lists them)", max_length=64)
    # Any here: the one rule for a server reference (workflows.validate.check_server_ref) says what is wrong
    # with a float or a list, in the words the CLI and the Python API use.
    server: Any = Field(
        None,
        description="server id or name (restore: the run's own server when left out)",
        json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}]},
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the workflow's parameters (null: none)")
    queue: StrictBool = Field(False, description="if the server is busy, queue behind its run")
    notify: list[StrictStr] = Field(
        default_factory=list, description="webhook URLs told of its start and end"
    )
    project: StrictStr | None = Field(None, description="the project to act in (the workers' default)")

    @field_validator("params", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        # As the Python API and the submit task take it: this was the one entry point to refuse it.
        return {} if value is None else value


class RetryRequest(BaseModel):
    """Which servers of an ended job a new job retries (as `hcloud-flow job retry`)."""

    model_config = ConfigDict(extra="forbid")

    failed: StrictBool = Field(True, description="the servers that failed or were refused")
    not_started: StrictBool = Field(False, description="the servers that never started (or were busy)")
    user_data: StrictStr | None = Field(
        None,
        description="the job's user data given again: a job keeps only its fingerprint once it has started "
        "its last server",
    )


class WindowPatch(BaseModel):
    """The window fields to change; the rest stay (as `hcloud-flow schedule edit`)."""

    model_config = ConfigDict(extra="forbid")

    workflow: StrictStr | None = None
    project: StrictStr | None = None
    cron: StrictStr | None = None
    tz: StrictStr | None = None
    duration: StrictStr | StrictInt | None = None
    cutoff: StrictStr | StrictInt | None = None
    selector: StrictStr | None = None
    servers: list[StrictInt | StrictStr] | None = None
    params: dict[str, Any] | None = None
    max_concurrency: StrictStr | StrictInt | None = None
    max_errors: StrictStr | StrictInt | None = None
    canary: StrictInt | None = None
    notify: list[StrictStr] | None = None
    block_on: list[StrictStr] | None = None
    drain: StrictBool | None = None
    health_check: StrictStr | None = None
    health_timeout: StrictStr | StrictInt | None = None
    health_settle: StrictStr | StrictInt | None = None
    max_per_placement_group: StrictInt | None = None
    max_per_location: StrictInt | None = None
    approve_before_start: StrictBool | None = None
    approve_after_canary: StrictBool | None = None
    approval_timeout: StrictStr | StrictInt | None = None

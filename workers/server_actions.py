"""The ten server actions as data: API path, action command, what "done" means, default deadlines.

Tasks, the monitor, the CLI and the docs all read this one table, so an action cannot exist in one place
and be missing in another (tests/unit/test_surface.py checks the table against the client and fakecloud).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .errors import BadInput
from .labels import check_labels
from .projects import check_project_name

__all__ = [
    "ACTIONS",
    "MAX_DESCRIPTION",
    "TASK_NAMES",
    "ServerAction",
    "TargetState",
    "check_description",
    "check_ssh_key_count",
    "check_step_options",
    "validate_params",
]

TargetState = Literal["running", "off", "image_available"]


@dataclass(frozen=True)
class ServerAction:
    """One server action: how to start it, and what the step that ran it must see before it is done.

    Behaviour lives in these fields, never in a comparison with an action, step or workflow name
    (STYLE lesson 16): the monitor, the engine and validation read them.
    """

    name: str  # our task-facing name, also the client method
    path: str  # POST /servers/{id}/actions/<path>
    command: str  # the Action's ``command``
    deadline: float  # default seconds for the action and its target state together
    target: TargetState | None = None  # state that must hold after the action succeeded
    params: tuple[str, ...] = ()  # accepted keyword parameters, passed to the API
    required: tuple[str, ...] = ()  # parameters the API needs
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # allowed values of enum params
    secret: bool = False  # the answer carries a root password
    # Success only means the ACPI signal was sent (reference §2.2): the guest may ignore it, so the
    # target state is checked against a grace period, and messages say so.
    acpi: bool = False
    # The action that forces the target state when the guest ignored the ACPI signal for the grace period.
    fallback: str | None = None
    # The answer carries a new image: the step labels it so a lost answer can be found again, and its
    # target is the image, not the server.
    makes_image: bool = False
    # The server's ``protection`` flag that makes the API refuse this action (423 protected): checked at
    # submit, so a protected server is refused before anything starts.
    protected_by: str | None = None
    summary: str = ""
    # What to check when the action fails: the API's own message for some causes is terse or generic.
    failure_hint: str | None = None
    # What the action leaves set for later: a run that stops after it says so with what it left.
    leaves: str | None = None


ACTIONS: dict[str, ServerAction] = {
    a.name: a
    for a in (
        ServerAction("power_on", "poweron", "start_server", 600, "running", summary="Power the server on."),
        ServerAction(
            "power_off",
            "poweroff",
            "stop_server",
            600,
            "off",
            summary="Cut power at once (like pulling the plug).",
        ),
        ServerAction(
            "reboot",
            "reboot",
            "reboot_server",
            600,
            acpi=True,
            summary="Ask the guest to reboot by ACPI (success means the signal was sent).",
        ),
        ServerAction(
            "reset",
            "reset",
            "reset_server",
            600,
            "running",
            summary="Cut power and start again.",
        ),
        ServerAction(
            "shutdown",
            "shutdown",
            "shutdown_server",
            900,
            "off",
            acpi=True,
            fallback="power_off",
            summary="Graceful ACPI shutdown; waits for 'off', then forces power off after a grace period "
            "unless force=false.",
        ),
        ServerAction(
            "reset_password",
            "reset_password",
            "reset_password",
            600,
            secret=True,
            summary="Reset the root password (server must be running); the password is sealed.",
            # reference §2.2: only Linux guests with the QEMU guest agent running; the code of this failure
            # is not documented (§10, question 5), so the hint goes with any failure of this action.
            failure_hint="resetting the password needs a running Linux guest with the QEMU guest agent "
            "(qemu-guest-agent) answering; check that it is installed and running, or use enable-rescue",
        ),
        ServerAction(
            "enable_rescue",
            "enable_rescue",
            "enable_rescue",
            600,
            params=("type", "ssh_keys"),
            choices={"type": ("linux64",)},
            secret=True,
            summary="Boot the rescue system at the next boot; the rescue password is sealed.",
            leaves="rescue mode stays on: the next boot starts the rescue system (rescue-off undoes it)",
        ),
        ServerAction(
            "disable_rescue",
            "disable_rescue",
            "disable_rescue",
            600,
            summary="Boot from disk again at the next boot.",
        ),
        ServerAction(
            "create_image",
            "create_image",
            "create_image",
            3 * 3600,
            "image_available",
            params=("description", "type", "labels"),
            choices={"type": ("snapshot", "backup")},
            makes_image=True,
            summary="Snapshot the disk into a new image; waits until the image is available.",
        ),
        ServerAction(
            "rebuild",
            "rebuild",
            "rebuild_server",
            3600,
            params=("image", "user_data"),
            required=("image",),
            secret=True,
            protected_by="rebuild",
            summary="Overwrite the disk from an image (id or name); the password is sealed.",
        ),
    )
}

# The public Celery task name of each action: stable, for send_task from any language.
TASK_NAMES = {name: f"hcloud_flow.{name}" for name in ACTIONS}

MAX_USER_DATA = 32 * 1024


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadInput(f"{name} must be a number of seconds from {low:g} to {high:g}, not {value!r}", name)
    return float(value)


class StepOptions(BaseModel):
    """The options every action task takes besides the API's parameters (one rule each, checked before the
    POST: a bad one must not surface after the action started)."""

    model_config = ConfigDict(extra="forbid")

    deadline: float | None = Field(None, ge=1, le=7 * 86400, description="seconds the step may take")
    wait_state: bool | None = Field(None, description="wait for the server's state, not only the action")
    force: bool | None = Field(None, description="shutdown: power off if the guest ignores ACPI")
    grace: float | None = Field(None, ge=0, le=3600, description="shutdown: seconds before forcing")
    run_id: str | None = None
    step: str | None = None
    skip_if_status: Literal["running", "off"] | None = Field(None, description="skip if already so")
    priority: Literal["interactive", "bulk"] | None = Field(None, description="the rate budget's class")
    project: str | None = Field(None, description="the project whose token the step uses (the default)")

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: Any) -> Any:
        return None if value is None else _number(value, "deadline", 1, 7 * 86400)

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> Any:
        return None if value is None else _number(value, "grace", 0, 3600)

    @field_validator("force", "wait_state", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not isinstance(value, bool):
            raise BadInput(f"{info.field_name} must be true or false, not {value!r}", info.field_name)
        return value

    @field_validator("run_id", "step", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not isinstance(value, str):
            raise BadInput(f"{info.field_name} must be a string", info.field_name)
        return value

    @field_validator("project", mode="before")
    @classmethod
    def _project(cls, value: Any) -> Any:
        return None if value is None else check_project_name(value)

    @field_validator("skip_if_status", mode="before")
    @classmethod
    def _skip(cls, value: Any) -> Any:
        if value not in (None, "running", "off"):
            raise BadInput("skip_if_status must be running or off", "skip_if_status")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        if value not in (None, "interactive", "bulk"):
            raise BadInput("priority must be interactive or bulk", "priority")
        return value


STEP_OPTIONS = tuple(StepOptions.model_fields)


def check_step_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check a step's options (``StepOptions``); return those given, cleaned."""
    return StepOptions.model_validate(opts).model_dump(exclude_unset=True)


MAX_DESCRIPTION = 1000
# Each key named costs an API read when a run is submitted, from the project's shared budget: ten thousand
# names drained a project's hour (an outside test). Far more than any rescue login needs.
MAX_SSH_KEYS = 50


def check_ssh_key_count(keys: Sequence[Any]) -> None:
    """Refuse a list of more ssh keys than any rescue needs (its entries are checked where they are read)."""
    if len(keys) > MAX_SSH_KEYS:
        raise BadInput(f"ssh_keys names {len(keys)} keys; at most {MAX_SSH_KEYS}", "ssh_keys")


def check_description(text: Any) -> str:
    """Return an image description fit to send (and to keep in results), or refuse it."""
    if not isinstance(text, str):
        raise BadInput("description must be a string", "description")
    if len(text) > MAX_DESCRIPTION:
        raise BadInput(
            f"description is longer than {MAX_DESCRIPTION} characters ({len(text)})", "description"
        )
    if not text.isprintable():
        raise BadInput("description must not hold control characters (newlines, escapes)", "description")
    return text


def validate_params(action: ServerAction, params: dict[str, Any]) -> dict[str, Any]:
    """Check an action's API parameters by shape, before anything is sent; return them cleaned."""
    unknown = set(params) - set(action.params)
    if unknown:
        allowed = ", ".join(action.params) or "none"
        hint = " (the server is the first argument: a server id or name)" if "server" in unknown else ""
        raise BadInput(
            f"{action.name} does not take {', '.join(sorted(unknown))} (it takes: {allowed}){hint}"
        )
    clean = {k: v for k, v in params.items() if v is not None}
    for name, options in action.choices.items():
        if name in clean and clean[name] not in options:
            raise BadInput(f"{name} must be one of {', '.join(options)}, not {clean[name]!r}", name)
    if "ssh_keys" in clean:
        keys = clean["ssh_keys"]
        if not isinstance(keys, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) for k in keys
        ):
            raise BadInput("ssh_keys must be a list of ssh key ids (integers)", "ssh_keys")
        check_ssh_key_count(keys)
    if "description" in clean:
        check_description(clean["description"])
    if "labels" in clean:
        clean["labels"] = check_labels(clean["labels"])
    for name in action.required:
        if clean.get(name) is None:
            raise BadInput(f"{action.name} needs {name}", name)
    if "image" in clean:
        image = clean["image"]
        if isinstance(image, bool) or not isinstance(image, int | str) or not str(image).strip():
            raise BadInput("image must be an image id or a system image name, not empty", "image")
    if "user_data" in clean:
        if not isinstance(clean["user_data"], str):
            raise BadInput("user_data must be a string", "user_data")
        if len(clean["user_data"].encode()) > MAX_USER_DATA:
            raise BadInput("user_data is larger than the API's 32 KiB limit", "user_data")
    return clean

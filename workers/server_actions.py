"""The ten server actions as data: API path, action command, what "done" means, default deadlines.

Tasks, the monitor, the CLI and the docs all read this one table, so an action cannot exist in one place
and be missing in another (tests/unit/test_surface.py checks the table against the client and fakecloud).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadInput

__all__ = ["ACTIONS", "TASK_NAMES", "ServerAction", "TargetState", "check_step_options", "validate_params"]

TargetState = Literal["running", "off", "image_available"]


@dataclass(frozen=True)
class ServerAction:
    """One server action: how to start it and when the step that ran it is finished."""

    name: str  # our task-facing name, also the client method
    path: str  # POST /servers/{id}/actions/<path>
    command: str  # the Action's ``command``
    deadline: float  # default seconds for the action and its target state together
    target: TargetState | None = None  # state that must hold after the action succeeded
    params: tuple[str, ...] = ()  # accepted keyword parameters, passed to the API
    secret: bool = False  # the answer carries a root password
    destructive: bool = False  # redelivery must never start it twice
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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
            destructive=True,
            summary="Cut power at once (like pulling the plug).",
        ),
        ServerAction(
            "reboot",
            "reboot",
            "reboot_server",
            600,
            destructive=True,
            summary="Ask the guest to reboot by ACPI (success means the signal was sent).",
        ),
        ServerAction(
            "reset",
            "reset",
            "reset_server",
            600,
            "running",
            destructive=True,
            summary="Cut power and start again.",
        ),
        ServerAction(
            "shutdown",
            "shutdown",
            "shutdown_server",
            900,
            "off",
            destructive=True,
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
        ),
        ServerAction(
            "enable_rescue",
            "enable_rescue",
            "enable_rescue",
            600,
            params=("type", "ssh_keys"),
            secret=True,
            summary="Boot the rescue system at the next boot; the rescue password is sealed.",
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
            destructive=True,
            summary="Snapshot the disk into a new image; waits until the image is available.",
        ),
        ServerAction(
            "rebuild",
            "rebuild",
            "rebuild_server",
            3600,
            params=("image", "user_data"),
            secret=True,
            destructive=True,
            summary="Overwrite the disk from an image (id or name); the password is sealed.",
        ),
    )
}

# The public Celery task name of each action: stable, for send_task from any language.
TASK_NAMES = {name: f"hcloud_flow.{name}" for name in ACTIONS}

# Options every action task accepts besides the API parameters.
STEP_OPTIONS = ("deadline", "wait_state", "force", "grace", "run_id", "step", "skip_if_status", "priority")
MAX_USER_DATA = 32 * 1024


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadInput(f"{name} must be a number of seconds from {low:g} to {high:g}, not {value!r}", name)
    return float(value)


def check_step_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check a step's options before anything is sent: a bad one must not surface after the POST."""
    if "deadline" in opts and opts["deadline"] is not None:
        opts["deadline"] = _number(opts["deadline"], "deadline", 1, 7 * 86400)
    if "grace" in opts and opts["grace"] is not None:
        opts["grace"] = _number(opts["grace"], "grace", 0, 3600)
    for flag in ("force", "wait_state"):
        if flag in opts and not isinstance(opts[flag], bool):
            raise BadInput(f"{flag} must be true or false, not {opts[flag]!r}", flag)
    for text in ("run_id", "step"):
        if opts.get(text) is not None and not isinstance(opts[text], str):
            raise BadInput(f"{text} must be a string", text)
    if opts.get("skip_if_status") not in (None, "running", "off"):
        raise BadInput("skip_if_status must be running or off", "skip_if_status")
    return opts


def validate_params(action: ServerAction, params: dict[str, Any]) -> dict[str, Any]:
    """Check an action's API parameters by shape, before anything is sent; return them cleaned."""
    unknown = set(params) - set(action.params)
    if unknown:
        allowed = ", ".join(action.params) or "none"
        raise BadInput(f"{action.name} does not take {', '.join(sorted(unknown))} (it takes: {allowed})")
    clean = {k: v for k, v in params.items() if v is not None}
    if "type" in clean:
        allowed_types = {"enable_rescue": ("linux64",), "create_image": ("snapshot", "backup")}[action.name]
        if clean["type"] not in allowed_types:
            raise BadInput(f"type must be one of {', '.join(allowed_types)}, not {clean['type']!r}", "type")
    if "ssh_keys" in clean:
        keys = clean["ssh_keys"]
        if not isinstance(keys, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) for k in keys
        ):
            raise BadInput("ssh_keys must be a list of ssh key ids (integers)", "ssh_keys")
    if "description" in clean and not isinstance(clean["description"], str):
        raise BadInput("description must be a string", "description")
    if "labels" in clean:
        labels = clean["labels"]
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise BadInput("labels must be an object of string keys to string values", "labels")
    if action.name == "rebuild":
        image = clean.get("image")
        if image is None or isinstance(image, bool) or not isinstance(image, int | str) or image == "":
            raise BadInput("rebuild needs image: an image id or a system image name", "image")
        if "user_data" in clean:
            if not isinstance(clean["user_data"], str):
                raise BadInput("user_data must be a string", "user_data")
            if len(clean["user_data"].encode()) > MAX_USER_DATA:
                raise BadInput("user_data is larger than the API's 32 KiB limit", "user_data")
    return clean

"""How each server action behaves over time, in one table (moto's ``ManagedState`` idea).

An action POST creates an Action ``running`` and, if the transition says so, moves the server to its
``during`` status at once. When the action's duration has passed (``duration / clock.speed`` seconds), the
backend settles it: on success the server moves to ``final`` and ``effect`` runs; on error the server goes
back to the status it had and ``undo`` runs. ``needs_acpi`` transitions do nothing visible to a guest that
ignores ACPI (the action still succeeds: it only "sent the signal", reference §2.2).

Tests may replace entries (``backend.transitions["reboot"] = replace(...)``) or just durations
(``PUT /_fakecloud/config {"durations": {...}}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .backend import Backend
    from .models import Action, Server

__all__ = [
    "ACTION_STATUSES",
    "FINISHED",
    "SERVER_STATUSES",
    "TRANSITIONS",
    "ActionStatus",
    "ServerStatus",
    "Transition",
]

ActionStatus = Literal["running", "success", "error"]
ACTION_STATUSES: frozenset[str] = frozenset({"running", "success", "error"})
FINISHED: frozenset[str] = frozenset({"success", "error"})

ServerStatus = Literal[
    "running", "initializing", "starting", "stopping", "off", "deleting", "migrating", "rebuilding", "unknown"
]
SERVER_STATUSES: frozenset[str] = frozenset(
    {
        "running",
        "initializing",
        "starting",
        "stopping",
        "off",
        "deleting",
        "migrating",
        "rebuilding",
        "unknown",
    }
)

Effect = Callable[["Backend", "Action", "Server"], None]


@dataclass(frozen=True)
class Transition:
    """The asynchronous behaviour of one server action."""

    command: str  # the action's "command" field (SPEC 201 examples)
    duration: float  # seconds at speed 1
    during: ServerStatus | None = None  # server status while running; None leaves it alone
    final: ServerStatus | None = None  # server status on success; None leaves it alone
    needs_acpi: bool = False  # only a guest that honours ACPI reacts
    boots: bool = False  # the server boots, which uses up rescue mode (SPEC enable_rescue)
    noop_when: frozenset[str] = frozenset()  # server statuses in which the action succeeds doing nothing
    effect: Effect | None = None  # runs on success
    undo: Effect | None = None  # runs on error


def _enable_rescue(backend: Backend, action: Action, server: Server) -> None:
    server.rescue_enabled = True


def _disable_rescue(backend: Backend, action: Action, server: Server) -> None:
    server.rescue_enabled = False


def _image_available(backend: Backend, action: Action, server: Server) -> None:
    image = backend.images.get(action.params["image_id"])
    if image is not None:
        image.status = "available"
        # A snapshot's size is what the disk held; a plausible fraction of the disk, fixed per image id.
        image.image_size = round(0.5 + (image.id % 97) / 97 * image.disk_size * 0.4, 2)


def _image_failed(backend: Backend, action: Action, server: Server) -> None:
    # Inference: a failed snapshot leaves no usable image behind, so it disappears (GET → 404).
    backend.images.pop(action.params["image_id"], None)


def _rebuilt(backend: Backend, action: Action, server: Server) -> None:
    server.image_id = action.params["image_id"]
    if "user_data" in action.params:
        server.user_data = action.params["user_data"]


# Keys are the URL suffixes of POST /servers/{id}/actions/<name>.
TRANSITIONS: dict[str, Transition] = {
    # No-ops succeed like the real API's idempotent power calls (inference, reference §10.4).
    "poweron": Transition(
        "start_server", 4.0, during="starting", final="running", boots=True, noop_when=frozenset({"running"})
    ),
    "poweroff": Transition("stop_server", 3.0, during="stopping", final="off", noop_when=frozenset({"off"})),
    "shutdown": Transition(
        "shutdown_server", 5.0, during="stopping", final="off", needs_acpi=True, noop_when=frozenset({"off"})
    ),
    # An ACPI reboot needs a guest that is up to receive the signal.
    "reboot": Transition("reboot_server", 5.0, needs_acpi=True, boots=True, noop_when=frozenset({"off"})),
    # reset "cuts power and starts the server again": a server that was off comes up running.
    "reset": Transition("reset_server", 4.0, final="running", boots=True),
    "reset_password": Transition("reset_password", 3.0),
    "enable_rescue": Transition("enable_rescue", 2.0, effect=_enable_rescue),
    "disable_rescue": Transition("disable_rescue", 2.0, effect=_disable_rescue),
    "create_image": Transition("create_image", 20.0, effect=_image_available, undo=_image_failed),
    # Inference (reference §10.3): the server is powered off, rebuilt, and comes back running.
    "rebuild": Transition("rebuild_server", 30.0, during="rebuilding", final="running", effect=_rebuilt),
}

ACTION_NAMES: tuple[str, ...] = tuple(TRANSITIONS)
COMMAND_TO_NAME: dict[str, str] = {t.command: name for name, t in TRANSITIONS.items()}

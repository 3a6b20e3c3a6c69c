"""The rules of the ten server actions: what each checks, what it starts, what it hands back.

Checks run in this order: server exists (404), input refers to things that exist (422), protection (423
``protected``), another action running (423 ``locked``), state the action needs (422). A request that fails
a check changes nothing.
"""

from __future__ import annotations

import heapq
import secrets
import string
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidInput, Locked, Protected, UnsupportedError
from .models import Action, Image, Server

if TYPE_CHECKING:
    import threading

    from .clock import Clock
    from .faults import FaultDice, FaultSpec
    from .models import SshKey
    from .transitions import Transition

__all__ = ["SIMPLE_ACTIONS", "ServerActions"]

_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def _password() -> str:
    # Shaped like the SPEC example "YItygq1v3GYjjMomLaKc"; real randomness, these are secrets.
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(20))


# Actions that take no input and return only the action.
SIMPLE_ACTIONS = frozenset({"poweron", "poweroff", "reboot", "reset", "shutdown", "disable_rescue"})


class ServerActions:
    """Mixed into ``Backend``: one method per server action."""

    if TYPE_CHECKING:  # what the mixin uses of Backend
        lock: threading.RLock
        clock: Clock
        skew: float
        faults: FaultSpec
        dice: FaultDice
        transitions: dict[str, Transition]
        servers: dict[int, Server]
        actions: dict[int, Action]
        images: dict[int, Image]
        ssh_keys: dict[int, SshKey]
        due: list[tuple[float, int]]
        root_passwords: list[str]
        next_action_id: int
        next_image_id: int

        def server(self, server_id: int) -> Server: ...
        def _settle(self, action: Action) -> None: ...

    def _ensure_unlocked(self, server: Server) -> None:
        if server.running_action_id is not None:
            raise Locked(f"server {server.id} is locked: action {server.running_action_id} is still running")

    def _start(self, server: Server, name: str, params: dict[str, Any] | None = None) -> Action:
        self._ensure_unlocked(server)
        transition = self.transitions[name]
        now = self.clock.now()
        self.next_action_id += 1
        action = Action(
            id=self.next_action_id,
            name=name,
            command=transition.command,
            server_id=server.id,
            started=now,
            due=now + transition.duration / self.clock.speed,
            params=params or {},
        )
        # Failure is decided now, from the test's one-shot order or the seeded dice, and shown at the end.
        action.fail_with = server.fail_next.pop(name, None) or self.dice.action_error(self.faults)
        before = server.status
        reacts = not transition.needs_acpi or server.honours_acpi(self.faults.acpi_ignore)
        action.noop = before in transition.noop_when or not reacts
        if not action.noop and transition.during is not None and before != transition.during:
            action.status_before = before
            server.status = transition.during
        self.actions[action.id] = action
        server.running_action_id = action.id
        if action.due <= now:
            self._settle(action)  # a zero duration finishes before the 201 is written
        else:
            heapq.heappush(self.due, (action.due, action.id))
        return action

    def _password_issued(self) -> str:
        password = _password()
        self.root_passwords.append(password)
        return password

    def simple_action(self, server_id: int, name: str) -> Action:
        """Start poweron, poweroff, reboot, reset, shutdown or disable_rescue."""
        with self.lock:
            if name not in SIMPLE_ACTIONS:
                raise ValueError(f"{name!r} is not an action without input")
            return self._start(self.server(server_id), name)

    def reset_password(self, server_id: int) -> tuple[Action, str]:
        """Start reset_password; the server must be running (SPEC: guest agent needed)."""
        with self.lock:
            server = self.server(server_id)
            self._ensure_unlocked(server)
            if server.status != "running":
                # Inference: the SPEC says the server must be running but names no error; 422 like its kin.
                raise UnsupportedError(
                    f"server {server.id} is {server.status}: reset_password needs a running server "
                    "with the qemu guest agent"
                )
            action = self._start(server, "reset_password")
            return action, self._password_issued()

    def enable_rescue(self, server_id: int, ssh_keys: list[int]) -> tuple[Action, str]:
        """Start enable_rescue (type already checked to be linux64); every SSH key must exist."""
        with self.lock:
            server = self.server(server_id)
            missing = [k for k in ssh_keys if k not in self.ssh_keys]
            if missing:
                raise InvalidInput({"ssh_keys": [f"ssh key {k} not found" for k in missing]})
            action = self._start(server, "enable_rescue", {"ssh_keys": list(ssh_keys)})
            return action, self._password_issued()

    def create_image(
        self, server_id: int, *, description: str | None, image_type: str, labels: dict[str, str]
    ) -> tuple[Action, Image]:
        """Start create_image; the image exists at once with status ``creating``."""
        with self.lock:
            server = self.server(server_id)
            self._ensure_unlocked(server)  # before the image exists, so a 423 leaves nothing behind
            now = self.clock.now()
            stamp = int(now + self.skew)  # the API's time, so it carries the skew like every reported time
            self.next_image_id += 1
            source = self.images.get(server.image_id) if server.image_id is not None else None
            image = Image(
                id=self.next_image_id,
                type=image_type,
                status="creating",
                name=None,  # only system images have names
                # Inference: the API generates a description when none is given; this is our format.
                description=description if description is not None else f"{server.name}-{stamp}",
                created=now,
                disk_size=server.primary_disk_size,
                os_flavor=source.os_flavor if source else "unknown",
                os_version=source.os_version if source else None,
                architecture=server.server_type["architecture"],
                created_from={"id": server.id, "name": server.name},
                bound_to=server.id if image_type == "backup" else None,
                labels=labels,
            )
            self.images[image.id] = image
            action = self._start(server, "create_image", {"image_id": image.id})
            return action, image

    def resolve_image(self, server: Server, ref: int | str) -> Image:
        """Find the rebuild image: an id, or the name of a system image of the server's architecture."""
        if isinstance(ref, int):
            image = self.images.get(ref)
        else:
            arch = server.server_type["architecture"]
            image = next(
                (
                    i
                    for i in self.images.values()
                    if i.type == "system" and i.name == ref and i.architecture == arch
                ),
                None,
            )
        if image is None:
            raise InvalidInput.field("image", f"image {ref!r} not found")
        if image.status != "available":
            raise InvalidInput.field("image", f"image {image.id} is {image.status}, not available")
        if image.architecture != server.server_type["architecture"]:
            raise InvalidInput.field(
                "image", f"image {image.id} is for {image.architecture}, the server is not"
            )
        return image

    def rebuild(self, server_id: int, image_ref: int | str, user_data: str | None) -> tuple[Action, str]:
        """Start rebuild; honours ``protection.rebuild``."""
        with self.lock:
            server = self.server(server_id)
            image = self.resolve_image(server, image_ref)
            if server.protection_rebuild:
                raise Protected(f"server {server.id} is protected against rebuild (protection.rebuild)")
            params: dict[str, Any] = {"image_id": image.id}
            if user_data is not None:
                params["user_data"] = user_data
            action = self._start(server, "rebuild", params)
            # Our choice: a password always, as for a server created without SSH keys (SPEC: null with keys).
            return action, self._password_issued()

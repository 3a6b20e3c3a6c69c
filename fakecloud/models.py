"""The resources fakecloud holds, and their public JSON shapes (SPEC schemas ``server``, ``action``,
``image``, ``ssh_key``). State changes live in ``backend.py``; timing lives in ``transitions.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .transitions import ActionStatus, ServerStatus

__all__ = ["Action", "Image", "Server", "SshKey", "rfc3339"]


def rfc3339(ts: float | None, skew: float = 0.0) -> str | None:
    """Format UNIX seconds plus ``skew`` as RFC 3339 in UTC (``2016-01-30T23:55:00+00:00``, as the SPEC)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts + skew))


@dataclass
class Image:
    """An image: system images are seeded, snapshots and backups come from create_image."""

    id: int
    type: str  # system | app | snapshot | backup
    status: str  # available | creating | unavailable
    name: str | None
    description: str
    created: float
    disk_size: float
    image_size: float | None = None
    os_flavor: str = "ubuntu"
    os_version: str | None = None
    architecture: str = "x86"
    rapid_deploy: bool = False
    created_from: dict[str, Any] | None = None
    bound_to: int | None = None
    deprecated: float | None = None  # when the deprecation was announced
    unavailable_after: float | None = None  # set with ``deprecated``
    labels: dict[str, str] = field(default_factory=dict)
    protection_delete: bool = False
    deleted: float | None = None  # when DELETE /images/{id} removed it; servers built from it still show it

    def to_json(self, skew: float = 0.0) -> dict[str, Any]:
        """Return the public ``image`` object; ``skew`` shifts its timestamps (the API's clock offset)."""
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "name": self.name,
            "description": self.description,
            "image_size": self.image_size,
            "disk_size": self.disk_size,
            "created": rfc3339(self.created, skew),
            "created_from": self.created_from,
            "bound_to": self.bound_to,
            "os_flavor": self.os_flavor,
            "os_version": self.os_version,
            "architecture": self.architecture,
            "rapid_deploy": self.rapid_deploy,
            "protection": {"delete": self.protection_delete},
            # The API added "deprecation" on 2026-09-08 and keeps "deprecated" (the announcement) until it
            # is removed; hcloud-python >= 2.24 reads only "deprecation", older clients only "deprecated".
            "deprecated": rfc3339(self.deprecated, skew),
            "deprecation": None
            if self.deprecated is None
            else {
                "announced": rfc3339(self.deprecated, skew),
                "unavailable_after": rfc3339(self.unavailable_after, skew),
            },
            "deleted": rfc3339(self.deleted, skew),
            "labels": dict(self.labels),
        }


@dataclass
class PlacementGroup:
    """A placement group (SPEC ``placement_group``): ``spread`` puts its servers on distinct hosts."""

    id: int
    name: str
    created: float
    type: str = "spread"
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self, servers: list[int], skew: float = 0.0) -> dict[str, Any]:
        """Return the public ``placement_group`` object; ``servers`` are its members' ids."""
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "type": self.type,
            "servers": list(servers),
            "created": rfc3339(self.created, skew),
        }


@dataclass
class SshKey:
    """An SSH key of the project (only read through the API)."""

    id: int
    name: str
    fingerprint: str
    public_key: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self, skew: float = 0.0) -> dict[str, Any]:
        """Return the public ``ssh_key`` object; ``skew`` shifts ``created``."""
        return {
            "id": self.id,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "public_key": self.public_key,
            "labels": dict(self.labels),
            "created": rfc3339(self.created, skew),
        }


@dataclass
class Action:
    """One server action; ``due`` is when the backend settles it (clock seconds)."""

    id: int
    name: str  # URL suffix, e.g. "poweron"
    command: str  # public command, e.g. "start_server"
    server_id: int
    started: float
    due: float
    status: ActionStatus = "running"
    finished: float | None = None
    error: dict[str, str] | None = None
    fail_with: tuple[str, str] | None = None  # decided at creation: (code, message) to end in error
    status_before: ServerStatus | None = None  # server status to restore if the action fails
    noop: bool = False  # succeeds without touching the server
    params: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] | None = None  # another resource's action (a load balancer's): not a server's

    def progress(self, now: float) -> int:
        """Return the percentage shown to clients: rising with time, 100 once finished."""
        if self.status != "running":
            return 100
        span = self.due - self.started
        if span <= 0:
            return 99
        return max(0, min(99, int(100 * (now - self.started) / span)))

    def to_json(self, now: float, skew: float = 0.0) -> dict[str, Any]:
        """Return the public ``action`` object as of ``now``; ``skew`` shifts ``started`` and ``finished``."""
        return {
            "id": self.id,
            "command": self.command,
            "status": self.status,
            "progress": self.progress(now),
            "started": rfc3339(self.started, skew),
            "finished": rfc3339(self.finished, skew),
            "resources": [self.resource or {"id": self.server_id, "type": "server"}],
            "error": self.error,
        }


@dataclass
class Server:
    """A server with the state the ten actions read and change."""

    id: int
    name: str
    status: ServerStatus
    created: float
    image_id: int | None
    server_type: dict[str, Any]
    location: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    rescue_enabled: bool = False
    protection_delete: bool = False
    protection_rebuild: bool = False
    backup_window: str | None = None
    outgoing_traffic: int = 0
    ingoing_traffic: int = 0
    primary_disk_size: int = 40
    included_traffic: int = 21_990_232_555_520  # 20 TiB, what current shared types include
    user_data: str | None = None
    acpi_draw: float = 1.0  # fixed by seed and id; the guest ignores ACPI when below faults.acpi_ignore
    acpi_override: bool | None = None  # set through PATCH /_fakecloud/servers/{id}
    running_action_id: int | None = None  # the action that holds the server's lock
    placement_group_id: int | None = None
    fail_next: dict[str, tuple[str, str]] = field(default_factory=dict)  # action name -> (code, message)

    def honours_acpi(self, acpi_ignore: float) -> bool:
        """Return whether the guest reacts to ACPI shutdown/reboot signals."""
        if self.acpi_override is not None:
            return self.acpi_override
        return self.acpi_draw >= acpi_ignore

    def public_net(self) -> dict[str, Any]:
        """Return a stable, documentation-range network setup derived from the id."""
        n = self.id
        return {
            "ipv4": {
                "id": 10_000_000 + n % 10_000_000,
                "ip": f"203.0.{(n >> 8) % 256}.{n % 256}",
                "blocked": False,
                "dns_ptr": f"static.{n % 256}.{(n >> 8) % 256}.0.203.clients.your-server.de",
            },
            "ipv6": {
                "id": 20_000_000 + n % 10_000_000,
                "ip": f"2001:db8:{n % 65536:x}::/64",
                "blocked": False,
                "dns_ptr": [],
            },
            "floating_ips": [],
            "firewalls": [],
        }

    def to_json(
        self, image: dict[str, Any] | None, skew: float = 0.0, placement_group: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the public ``server`` object; ``image`` and ``placement_group`` are rendered (or None)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created": rfc3339(self.created, skew),
            "public_net": self.public_net(),
            "private_net": [],
            "server_type": self.server_type,
            "location": self.location,
            "image": image,
            "iso": None,
            "rescue_enabled": self.rescue_enabled,
            "locked": False,  # the administrative lock, not the 423 caused by a running action
            "backup_window": self.backup_window,
            "outgoing_traffic": self.outgoing_traffic,
            "ingoing_traffic": self.ingoing_traffic,
            "included_traffic": self.included_traffic,
            "primary_disk_size": self.primary_disk_size,
            "protection": {"delete": self.protection_delete, "rebuild": self.protection_rebuild},
            "labels": dict(self.labels),
            "volumes": [],
            "load_balancers": [],
            "placement_group": placement_group,
        }

"""The seeded world: server types, locations, system images, SSH keys and a deterministic fleet."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from typing import Any

from .models import Image, Server, SshKey

__all__ = ["SERVER_ID_BASE", "make_server", "server_types", "ssh_keys", "system_images"]

# Ids look like real ones (large ints) but stay far below 2**53 so every JSON client keeps them exact.
SERVER_ID_BASE = 50_000_000
ACTION_ID_BASE = 700_000_000_000
SNAPSHOT_ID_BASE = 200_000_000
SSH_KEY_ID_BASE = 20_000_000

_DAY = 86_400.0


def _price(net: str, gross: str, location: str) -> dict[str, Any]:
    return {
        "location": location,
        "price_hourly": {"net": net, "gross": gross},
        "price_monthly": {"net": net, "gross": gross},
        "included_traffic": 21_990_232_555_520,
        "price_per_tb_traffic": {"net": "1.0000000000", "gross": "1.1900000000000000"},
    }


def _server_type(id_: int, name: str, cores: int, memory: float, disk: int, arch: str) -> dict[str, Any]:
    return {
        "id": id_,
        "name": name,
        "description": name.upper(),
        "category": "shared",
        "cores": cores,
        "memory": memory,
        "disk": disk,
        "deprecated": False,
        "deprecation": None,
        "prices": [_price("0.0060000000", "0.0071400000", "fsn1")],
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": arch,
        "locations": [
            {"id": loc_id, "name": name, "deprecation": None, "available": True, "recommended": True}
            for loc_id, name in ((1, "fsn1"), (2, "nbg1"), (3, "hel1"))
        ],
    }


def server_types() -> list[dict[str, Any]]:
    """Return the server types servers are spread over."""
    return [
        _server_type(104, "cpx22", 2, 4.0, 80, "x86"),
        _server_type(105, "cpx32", 4, 8.0, 160, "x86"),
        _server_type(45, "cax11", 2, 4.0, 40, "arm"),
    ]


LOCATIONS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "fsn1",
        "description": "Falkenstein DC Park 1",
        "country": "DE",
        "city": "Falkenstein",
        "latitude": 50.47612,
        "longitude": 12.370071,
        "network_zone": "eu-central",
    },
    {
        "id": 2,
        "name": "nbg1",
        "description": "Nuremberg DC Park 1",
        "country": "DE",
        "city": "Nuremberg",
        "latitude": 49.452102,
        "longitude": 11.076665,
        "network_zone": "eu-central",
    },
    {
        "id": 3,
        "name": "hel1",
        "description": "Helsinki DC Park 1",
        "country": "FI",
        "city": "Helsinki",
        "latitude": 60.169855,
        "longitude": 24.938379,
        "network_zone": "eu-central",
    },
]


def system_images(now: float) -> list[Image]:
    """Return the system images; ``ubuntu-20.04`` is the deprecated one."""

    def image(id_: int, name: str, flavor: str, version: str, age_days: int, **kw: Any) -> Image:
        return Image(
            id=id_,
            type="system",
            status="available",
            name=name,
            description=f"{flavor.title()} {version}",
            created=now - age_days * _DAY,
            disk_size=5,
            image_size=None,
            os_flavor=flavor,
            os_version=version,
            rapid_deploy=True,
            **kw,
        )

    # Like the real catalogue, each current system image exists once per architecture, with its own id.
    return [
        # Announced a month ago, usable for new servers for two more months (a deprecation info object).
        image(
            67794396,
            "ubuntu-20.04",
            "ubuntu",
            "20.04",
            1900,
            deprecated=now - 30 * _DAY,
            unavailable_after=now + 60 * _DAY,
        ),
        image(67794397, "ubuntu-22.04", "ubuntu", "22.04", 1300),
        image(103908070, "ubuntu-22.04", "ubuntu", "22.04", 1300, architecture="arm"),
        image(161547269, "ubuntu-24.04", "ubuntu", "24.04", 600),
        image(161547270, "ubuntu-24.04", "ubuntu", "24.04", 600, architecture="arm"),
        image(114690387, "debian-12", "debian", "12", 900),
        image(114690389, "debian-12", "debian", "12", 900, architecture="arm"),
        image(45557056, "debian-11", "debian", "11", 1500),
        image(103908069, "debian-11", "debian", "11", 1500, architecture="arm"),
    ]


def ssh_keys(now: float) -> list[SshKey]:
    """Return the project's SSH keys (two, with labels)."""
    keys = []
    for i, (name, labels) in enumerate(
        [("ops", {"team": "ops"}), ("deploy", {"team": "ci", "env": "production"})]
    ):
        # A well-formed OpenSSH ed25519 key blob, and its fingerprint as the API computes it: MD5 of the blob.
        key = hashlib.sha256(f"fakecloud-key-{name}".encode()).digest()
        blob = b"".join((struct.pack(">I", 11), b"ssh-ed25519", struct.pack(">I", len(key)), key))
        public = f"ssh-ed25519 {base64.b64encode(blob).decode()} {name}@fakecloud"
        fingerprint = ":".join(f"{b:02x}" for b in hashlib.md5(blob, usedforsecurity=False).digest())
        keys.append(
            SshKey(SSH_KEY_ID_BASE + i + 1, name, fingerprint, public, now - (400 - i) * _DAY, labels)
        )
    return keys


_ENVS = ("production", "production", "staging", "testing")
_ROLES = ("web", "web", "api", "db", None)


def make_server(
    rng: random.Random,
    server_id: int,
    number: int,
    now: float,
    images: list[Image],
    types: list[dict[str, Any]],
    labels: dict[str, str] | None = None,
    status: str | None = None,
) -> Server:
    """Build server ``srv-<number>`` with a seeded mix of labels and statuses (mostly running, some off)."""
    server_type = rng.choice(types)
    arch = server_type["architecture"]
    usable = [i for i in images if i.architecture == arch and i.deprecated is None] or images
    if labels is None:
        labels = {"env": rng.choice(_ENVS)}
        role = rng.choice(_ROLES)
        if role is not None:
            labels["role"] = role
        if rng.random() < 0.3:
            labels["team"] = rng.choice(("blue", "green"))
    return Server(
        id=server_id,
        name=f"srv-{number}",
        status=status or ("off" if rng.random() < 0.2 else "running"),  # type: ignore[arg-type]
        created=now - rng.randint(1, 700) * _DAY,
        image_id=rng.choice(usable).id,
        server_type=server_type,
        location=rng.choice(LOCATIONS),
        labels=dict(labels),
        backup_window=rng.choice((None, None, "22-02", "02-06")),
        outgoing_traffic=rng.randint(0, 10**12),
        ingoing_traffic=rng.randint(0, 10**12),
        primary_disk_size=server_type["disk"],
    )

"""What an operator looks up beside the hcloud CLI: the project's servers and images, with our runs on them.

Plain functions under the ``hcloud_flow.servers`` and ``hcloud_flow.images`` tasks (the token lives in the
workers): each server with the run holding it, each snapshot or backup with the run that made it.
"""

from __future__ import annotations

from typing import Any

from workers.client import HcloudClient
from workers.errors import APIError, BadInput
from workers.labels import check_selector
from workers.run_store import RunStore

__all__ = ["project_images", "project_servers"]


def project_servers(client: HcloudClient, store: RunStore, selector: Any = None) -> list[dict[str, Any]]:
    """Return the project's servers (those the label selector picks, if given), by id."""
    if selector is not None:
        selector = check_selector(selector)  # the API's syntax, refused here before any request
    try:
        servers = client.list_servers(label_selector=selector)
    except APIError as exc:
        if exc.code != "invalid_input":
            raise
        raise BadInput(f"the API refused the label selector: {exc.message[:200]}", "selector") from exc
    held = store.holders([int(s["id"]) for s in servers])
    return sorted(
        (
            {
                "id": int(s["id"]),
                "name": s.get("name"),
                "status": s.get("status"),
                "labels": s.get("labels") or {},
                "server_type": (s.get("server_type") or {}).get("name"),
                "location": (s.get("location") or (s.get("datacenter") or {}).get("location") or {}).get(
                    "name"
                ),
                "ipv4": ((s.get("public_net") or {}).get("ipv4") or {}).get("ip"),
                "held_by": held.get(int(s["id"])),
            }
            for s in servers
        ),
        key=lambda s: s["id"],
    )


def _location(server: dict[str, Any]) -> str | None:
    """Return the server's location name: its own field, or its datacenter's (older answers)."""
    place = server.get("location") or (server.get("datacenter") or {}).get("location") or {}
    return place.get("name")


def project_images(client: HcloudClient, store: RunStore) -> list[dict[str, Any]]:
    """Return the project's snapshots and backups, newest first, each with the run of ours that made it."""
    images = [*client.list_images(type="snapshot"), *client.list_images(type="backup")]
    made_by = store.image_runs([int(i["id"]) for i in images])
    return sorted(
        (
            {
                "id": int(i["id"]),
                "type": i.get("type"),
                "status": i.get("status"),
                "description": i.get("description"),
                "created": i.get("created"),
                "image_size": i.get("image_size"),
                "from_server": (i.get("created_from") or {}).get("name"),
                "labels": i.get("labels") or {},
                "run_id": made_by.get(int(i["id"])),
            }
            for i in images
        ),
        key=lambda i: -i["id"],
    )

"""Restore's checks at submit: the earlier run, its snapshot, and the server (no API, no Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import APIError, BadInput
from workflows.undo import from_earlier_run


class Store:
    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs

    def get(self, run_id: str, live: bool = True) -> dict[str, Any] | None:
        return self.runs.get(run_id)


class Images:
    def __init__(self, images: dict[int, dict[str, Any]]) -> None:
        self.images = images

    def get_image(self, image_id: int) -> dict[str, Any]:
        if image_id not in self.images:
            raise APIError("not_found", f"image with ID '{image_id}' not found", 404)
        return self.images[image_id]


REBUILD = {
    "id": "r1", "workflow": "rebuild", "server_id": 7, "server_name": "db-1",
    "steps": [{"name": "shutdown", "outputs": {}},
              {"name": "safety_snapshot", "outputs": {"image": {"id": 90}}},
              {"name": "rebuild", "outputs": {"root_password": {"notice": "sealed"}}}],
}  # fmt: skip
REBOOT = {"id": "r2", "workflow": "reboot", "server_id": 7, "server_name": "db-1", "steps": [{"outputs": {}}]}


def resolve(server: Any, params: dict[str, Any], images: dict[int, dict[str, Any]] | None = None) -> Any:
    store = Store({"r1": REBUILD, "r2": REBOOT})
    known = {90: {"id": 90, "status": "available"}} if images is None else images
    return from_earlier_run(store, Images(known), "from_run", server, params)  # type: ignore[arg-type]


def test_the_server_and_image_come_from_the_run() -> None:
    assert resolve(None, {"from_run": "r1", "grace": 5}) == (7, {"from_run": "r1", "grace": 5, "image": 90})
    assert resolve("db-1", {"from_run": "r1"})[0] == 7
    assert resolve(7, {"from_run": "r1"})[0] == 7


@pytest.mark.parametrize(
    ("server", "params", "images", "message"),
    [
        (None, {"from_run": "nosuch"}, None, "no run 'nosuch'"),
        (None, {"from_run": ""}, None, "no run ''"),
        (None, {"from_run": "r2"}, None, r"run r2 \(reboot\) made no snapshot"),
        ("db-2", {"from_run": "r1"}, None, r"was of server db-1 \(7\), not db-2"),
        (None, {"from_run": "r1"}, {}, "snapshot 90 that run r1 made is gone"),
        (None, {"from_run": "r1"}, {90: {"id": 90, "status": "creating"}}, "is creating, not available"),
    ],
)
def test_refusals(server: Any, params: dict[str, Any], images: Any, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        resolve(server, params, images)


def test_restore_does_not_run_over_a_fleet() -> None:
    from workflows.specs import FleetSpec, checked

    with pytest.raises(BadInput, match="does not run over a fleet"):
        checked(FleetSpec, {"workflow": "restore", "servers": [1], "params": {"from_run": "r1"}})

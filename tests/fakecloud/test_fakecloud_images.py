"""Images a project owns: PUT /images/{id}, DELETE /images/{id}, change_protection and the image actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from workers.client import HcloudClient
from workers.errors import APIError

if TYPE_CHECKING:
    from conftest import Api

SYSTEM_IMAGE = 67794397  # ubuntu-22.04 x86, seeded


def _error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def _snapshot(api: Api, server_id: int | None = None, **body: Any) -> dict[str, Any]:
    """Create an image with create_image (its duration is 0 in these clouds) and return it, available."""
    server_id = server_id or api.ids()[0]
    response = api.action(server_id, "create_image", json=body)
    assert response.status_code == 201, response.text
    image = api.get(f"/images/{response.json()['image']['id']}").json()["image"]
    assert image["status"] == "available"
    return image


def _protect(api: Api, image_id: int, delete: Any) -> requests.Response:
    return api.post(f"/images/{image_id}/actions/change_protection", json={"delete": delete})


@pytest.fixture
def cloud(make_cloud: Any) -> Api:
    return make_cloud(servers=4, durations={"create_image": 0})


# ----- DELETE /images/{id} ----------------------------------------------------------------------------
def test_delete_answers_204_without_a_body_and_the_image_is_gone(cloud: Api) -> None:
    image = _snapshot(cloud, labels={"run": "r1"})
    response = cloud.request("DELETE", f"/images/{image['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Type" not in response.headers and "Content-Length" not in response.headers
    assert {"RateLimit-Remaining", "X-Correlation-Id"} <= set(response.headers)
    _error(cloud.get(f"/images/{image['id']}"), 404, "not_found")
    assert cloud.get("/images", params={"label_selector": "run=r1"}).json()["images"] == []
    # Deleted is deleted: a second DELETE finds nothing (what a client retrying a lost answer meets).
    _error(cloud.request("DELETE", f"/images/{image['id']}"), 404, "not_found")
    # The connection kept alive after the bodiless 204 still carries the next answer.
    assert cloud.get("/images").status_code == 200


def test_a_backup_can_be_deleted_too(cloud: Api) -> None:
    backup = _snapshot(cloud, type="backup")
    assert backup["type"] == "backup" and backup["bound_to"] is not None
    assert cloud.request("DELETE", f"/images/{backup['id']}").status_code == 204


def test_delete_protected_image_is_refused_until_the_protection_is_lifted(cloud: Api) -> None:
    image = _snapshot(cloud)
    assert _protect(cloud, image["id"], True).status_code == 201
    error = _error(cloud.request("DELETE", f"/images/{image['id']}"), 423, "protected")
    assert str(image["id"]) in error["message"]
    assert cloud.get(f"/images/{image['id']}").json()["image"]["protection"] == {"delete": True}
    assert _protect(cloud, image["id"], False).status_code == 201
    assert cloud.request("DELETE", f"/images/{image['id']}").status_code == 204


def test_system_images_cannot_be_deleted_updated_or_protected(cloud: Api) -> None:
    before = cloud.get(f"/images/{SYSTEM_IMAGE}").json()["image"]
    _error(cloud.request("DELETE", f"/images/{SYSTEM_IMAGE}"), 422, "unsupported_error")
    _error(cloud.request("PUT", f"/images/{SYSTEM_IMAGE}", json={"labels": {}}), 422, "unsupported_error")
    _error(_protect(cloud, SYSTEM_IMAGE, True), 422, "unsupported_error")
    assert cloud.get(f"/images/{SYSTEM_IMAGE}").json()["image"] == before


def test_change_protection_is_for_snapshots_only(cloud: Api) -> None:
    backup = _snapshot(cloud, type="backup")
    _error(_protect(cloud, backup["id"], True), 422, "unsupported_error")  # SPEC: "only ... on snapshots"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/images/1", None),
        ("PUT", "/images/1", {"description": "x"}),
        ("POST", "/images/1/actions/change_protection", {"delete": True}),
        ("GET", "/images/1/actions", None),
        ("GET", "/images/1/actions/1", None),
        ("GET", "/images/actions/1", None),
    ],
)
def test_unknown_image_or_action_is_404(cloud: Api, method: str, path: str, body: Any) -> None:
    _error(cloud.request(method, path, json=body), 404, "not_found")


def test_image_route_allows_get_put_and_delete(cloud: Api) -> None:
    response = cloud.post(f"/images/{SYSTEM_IMAGE}")
    _error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "DELETE, GET, HEAD, PUT"


def test_a_server_still_shows_the_deleted_image_it_was_rebuilt_from(cloud: Api) -> None:
    server_id = cloud.running_server()
    image = _snapshot(cloud, server_id)
    cloud.fc.backend.set_durations({"rebuild": 0})
    assert cloud.action(server_id, "rebuild", json={"image": image["id"]}).status_code == 201
    assert cloud.request("DELETE", f"/images/{image['id']}").status_code == 204
    shown = cloud.server(server_id)["image"]
    assert shown["id"] == image["id"] and shown["deleted"] is not None
    # Gone for everything else: a rebuild from it is refused as from an image that does not exist.
    _error(cloud.action(server_id, "rebuild", json={"image": image["id"]}), 422, "invalid_input")


# ----- PUT /images/{id} -------------------------------------------------------------------------------
def test_update_replaces_the_labels_and_sets_the_description(cloud: Api) -> None:
    image = _snapshot(cloud, labels={"run": "r1", "keep": "no"}, description="old")
    response = cloud.request(
        "PUT", f"/images/{image['id']}", json={"labels": {"run": "r2", "example.com/tier": ""}}
    )
    assert response.status_code == 200, response.text
    updated = response.json()["image"]
    assert updated["labels"] == {"run": "r2", "example.com/tier": ""}  # the whole set, not a merge
    assert updated["description"] == "old"  # left out: unchanged
    assert cloud.get(f"/images/{image['id']}").json() == {"image": updated}

    response = cloud.request("PUT", f"/images/{image['id']}", json={"description": "new", "labels": None})
    assert response.json()["image"]["description"] == "new"
    assert response.json()["image"]["labels"] == {"run": "r2", "example.com/tier": ""}  # null: unchanged
    cleared = cloud.request("PUT", f"/images/{image['id']}", json={"labels": {}}).json()["image"]
    assert cleared["labels"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"labels": {"bad key": "x"}}, "labels"),
        ({"labels": {"hetzner.cloud/x": "y"}}, "labels"),
        ({"labels": {"k": "v" * 64}}, "labels"),
        ({"labels": {"k": 1}}, "labels"),
        ({"labels": ["k=v"]}, "labels"),
        ({"description": 5}, "description"),
        ({"type": "backup"}, "type"),
        ({"type": "system"}, "type"),
    ],
)
def test_update_with_invalid_fields_is_422_and_changes_nothing(
    cloud: Api, body: dict[str, Any], field: str
) -> None:
    image = _snapshot(cloud, labels={"run": "r1"})
    error = _error(cloud.request("PUT", f"/images/{image['id']}", json=body), 422, "invalid_input")
    assert [f["name"] for f in error["details"]["fields"]] == [field]
    assert cloud.get(f"/images/{image['id']}").json()["image"] == image


def test_update_converts_a_backup_to_a_snapshot(cloud: Api) -> None:
    backup = _snapshot(cloud, type="backup")
    converted = cloud.request("PUT", f"/images/{backup['id']}", json={"type": "snapshot"}).json()["image"]
    assert (converted["type"], converted["bound_to"]) == ("snapshot", None)
    # Converting a snapshot to what it already is changes nothing.
    again = cloud.request("PUT", f"/images/{backup['id']}", json={"type": "snapshot"}).json()["image"]
    assert again == converted


def test_update_ignores_fields_it_does_not_know_and_refuses_bad_json(cloud: Api) -> None:
    image = _snapshot(cloud)
    response = cloud.request("PUT", f"/images/{image['id']}", json={"name": "mine", "description": "d"})
    assert response.status_code == 200
    assert (response.json()["image"]["name"], response.json()["image"]["description"]) == (None, "d")
    _error(cloud.request("PUT", f"/images/{image['id']}", data=b"{oops"), 400, "json_error")
    _error(cloud.request("PUT", f"/images/{image['id']}", json=[1]), 400, "json_error")


# ----- change_protection and the image actions --------------------------------------------------------
def test_change_protection_action_and_its_effect(cloud: Api) -> None:
    image = _snapshot(cloud)
    assert image["protection"] == {"delete": False}
    response = _protect(cloud, image["id"], True)
    assert response.status_code == 201, response.text
    action = response.json()["action"]
    assert set(response.json()) == {"action"}
    assert action["command"] == "change_protection"
    assert action["resources"] == [{"id": image["id"], "type": "image"}]
    # It succeeds at once, like the SPEC's example 201; polling it shows the same finished action.
    assert (action["status"], action["progress"], action["error"]) == ("success", 100, None)
    assert action["finished"] is not None
    assert cloud.action_status(action["id"]) == action
    assert cloud.get(f"/images/{image['id']}").json()["image"]["protection"] == {"delete": True}

    # A body without "delete" (hcloud-python sends {} when the caller gives none) changes nothing.
    assert cloud.post(f"/images/{image['id']}/actions/change_protection", json={}).status_code == 201
    assert cloud.post(f"/images/{image['id']}/actions/change_protection").status_code == 201
    assert cloud.get(f"/images/{image['id']}").json()["image"]["protection"] == {"delete": True}
    for bad in ("yes", 1):
        _error(_protect(cloud, image["id"], bad), 422, "invalid_input")


def test_image_actions_are_listed_by_the_image_routes_only(cloud: Api) -> None:
    first, second = _snapshot(cloud), _snapshot(cloud, cloud.ids()[1])
    a1 = _protect(cloud, first["id"], True).json()["action"]
    a2 = _protect(cloud, second["id"], True).json()["action"]
    a3 = _protect(cloud, first["id"], False).json()["action"]

    mine = cloud.get(f"/images/{first['id']}/actions", params={"sort": "id:desc"}).json()
    assert [a["id"] for a in mine["actions"]] == [a3["id"], a1["id"]]
    assert mine["meta"]["pagination"]["total_entries"] == 2
    every = cloud.get("/images/actions").json()["actions"]
    assert [a["id"] for a in every] == [a1["id"], a2["id"], a3["id"]]
    chosen = cloud.get("/images/actions", params=[("id", a2["id"]), ("id", a3["id"]), ("status", "success")])
    assert [a["id"] for a in chosen.json()["actions"]] == [a2["id"], a3["id"]]
    assert cloud.get("/images/actions", params={"status": "running"}).json()["actions"] == []
    assert cloud.get(f"/images/actions/{a2['id']}").json() == {"action": a2}
    assert cloud.get(f"/images/{first['id']}/actions/{a1['id']}").json() == {"action": a1}
    _error(cloud.get(f"/images/{first['id']}/actions/{a2['id']}"), 404, "not_found")  # the other image's
    page = cloud.get("/images/actions", params={"per_page": 2, "page": 2}).json()
    assert [a["id"] for a in page["actions"]] == [a3["id"]]
    _error(cloud.get("/images/actions", params={"sort": "nope"}), 422, "invalid_input")

    # Not a server's action: the server lists leave it out, and the create_image actions are not the image's.
    servers_actions = cloud.get("/servers/actions", params={"per_page": 50}).json()["actions"]
    assert {a["command"] for a in servers_actions} == {"create_image"}
    _error(cloud.get(f"/servers/actions/{a1['id']}"), 404, "not_found")
    creation = servers_actions[0]
    _error(cloud.get(f"/images/actions/{creation['id']}"), 404, "not_found")
    # GET /actions?id= reads every kind of action, as the API's does.
    both = cloud.get("/actions", params=[("id", a1["id"]), ("id", creation["id"])]).json()["actions"]
    assert len(both) == 2


# ----- listing after updates ----------------------------------------------------------------------------
def test_label_selector_sort_type_and_pagination_see_the_updates(cloud: Api) -> None:
    made = [_snapshot(cloud, labels={"env": "staging"}) for _ in range(3)]
    backup = _snapshot(cloud, type="backup", labels={"env": "staging"})
    cloud.request("PUT", f"/images/{made[1]['id']}", json={"labels": {"env": "production", "keep": ""}})
    cloud.request("PUT", f"/images/{backup['id']}", json={"type": "snapshot"})

    def ids(**params: Any) -> list[int]:
        response = cloud.get("/images", params=params)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["images"]]

    assert ids(label_selector="env=production") == [made[1]["id"]]
    assert ids(label_selector="env=staging", sort="id:desc") == [backup["id"], made[2]["id"], made[0]["id"]]
    assert ids(label_selector="keep") == [made[1]["id"]]
    assert ids(label_selector="env in (production,staging),!keep", type="snapshot") == [
        made[0]["id"],
        made[2]["id"],
        backup["id"],  # converted: a snapshot now
    ]
    assert ids(type="backup") == []
    assert ids(label_selector="env", status="available", per_page=2, page=2) == [made[2]["id"], backup["id"]]
    cloud.request("DELETE", f"/images/{made[0]['id']}")
    assert ids(label_selector="env=staging") == [made[2]["id"], backup["id"]]
    _error(cloud.get("/images", params={"label_selector": "env in (a"}), 422, "invalid_input")


def test_hcloud_flows_client_over_the_wire(cloud: Api) -> None:
    client = HcloudClient(cloud.fc.backend.token, base_url=cloud.fc.base_url, sleep=lambda s: None)
    image = _snapshot(cloud, labels={"run": "r1"})
    assert client.update_image(image["id"], labels={"run": "r2"}, description="d")["labels"] == {"run": "r2"}
    assert [i["id"] for i in client.list_images(label_selector="run=r2")] == [image["id"]]
    action = client.change_image_protection(image["id"], delete=True)
    assert (action["command"], action["status"]) == ("change_protection", "success")
    with pytest.raises(APIError) as info:
        client.delete_image(image["id"])
    assert info.value.code == "protected"
    client.change_image_protection(image["id"], delete=False)
    assert client.delete_image(image["id"]) is None
    with pytest.raises(APIError) as info:
        client.delete_image(image["id"])  # a first attempt's 404 is the caller's to hear
    assert info.value.code == "not_found"

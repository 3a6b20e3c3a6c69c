"""The ten server actions: responses, accepted body forms, validation, locking, protection, lifecycles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api

ACTION_KEYS = {"id", "command", "status", "progress", "started", "finished", "resources", "error"}
COMMANDS = {
    "poweron": "start_server",
    "poweroff": "stop_server",
    "reboot": "reboot_server",
    "reset": "reset_server",
    "shutdown": "shutdown_server",
    "reset_password": "reset_password",
    "enable_rescue": "enable_rescue",
    "disable_rescue": "disable_rescue",
    "create_image": "create_image",
    "rebuild": "rebuild_server",
}
EXTRA_KEYS = {
    "reset_password": {"root_password"},
    "enable_rescue": {"root_password"},
    "rebuild": {"root_password"},
    "create_image": {"image"},
}
BODIES: dict[str, Any] = {"rebuild": {"image": "ubuntu-24.04"}}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_action_answers_201_with_documented_keys(api: Api, name: str) -> None:
    server_id = api.running_server()
    kw = {"json": BODIES[name]} if name in BODIES else {}
    response = api.action(server_id, name, **kw)
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"action"} | EXTRA_KEYS.get(name, set())
    action = body["action"]
    assert set(action) == ACTION_KEYS
    assert action["command"] == COMMANDS[name]
    assert (action["status"], action["progress"], action["finished"], action["error"]) == (
        "running",
        0,
        None,
        None,
    )
    assert action["resources"] == [{"id": server_id, "type": "server"}]
    assert isinstance(action["id"], int)
    if "root_password" in body:
        assert isinstance(body["root_password"], str) and len(body["root_password"]) >= 12
    if name == "create_image":
        assert body["image"]["status"] == "creating"


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("poweroff", {}),
        ("poweroff", {"data": b"{}", "headers": {"Content-Type": "application/json"}}),
        ("poweroff", {"data": b"null", "headers": {"Content-Type": "application/json"}}),
        ("poweroff", {"json": None}),
        ("create_image", {"json": {"type": None, "description": None}}),
        ("create_image", {"json": {"type": None, "description": None, "labels": None}}),
        ("create_image", {"data": b"null"}),
        ("enable_rescue", {"json": {"type": None}}),
        ("enable_rescue", {"json": {"type": ""}}),
        ("enable_rescue", {"json": {"type": "linux64", "ssh_keys": None}}),
        ("enable_rescue", {}),
        ("rebuild", {"json": {"image": "ubuntu-24.04", "user_data": None}}),
    ],
)
def test_accepted_body_forms(api: Api, name: str, kw: dict[str, Any]) -> None:
    response = api.action(api.running_server(), name, **kw)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("enable_rescue", {"type": "linux32"}, "type"),
        ("enable_rescue", {"ssh_keys": [123]}, "ssh_keys"),
        ("enable_rescue", {"ssh_keys": "all"}, "ssh_keys"),
        ("create_image", {"type": "golden"}, "type"),
        ("create_image", {"description": 5}, "description"),
        ("create_image", {"labels": {"hetzner.cloud/x": "y"}}, "labels"),
        ("create_image", {"labels": {"ok": "bad value!"}}, "labels"),
        ("create_image", {"labels": ["x"]}, "labels"),
        ("rebuild", {}, "image"),
        ("rebuild", {"image": None}, "image"),
        ("rebuild", {"image": "no-such-image"}, "image"),
        ("rebuild", {"image": 999}, "image"),
        ("rebuild", {"image": True}, "image"),
        ("rebuild", {"image": "ubuntu-24.04", "user_data": "x" * (32 * 1024 + 1)}, "user_data"),
    ],
)
def test_validation_errors_name_the_field(api: Api, name: str, body: dict[str, Any], field: str) -> None:
    server_id = api.running_server()
    response = api.action(server_id, name, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["fields"][0]["name"] == field
    assert error["details"]["fields"][0]["messages"]
    # Nothing was started: the server is free for another action.
    assert api.action(server_id, "reset").status_code == 201


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_unparseable_or_non_object_body_is_json_error(api: Api, raw: bytes) -> None:
    response = api.action(
        api.running_server(), "poweroff", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_error"


def test_rebuild_image_by_id_number_or_digit_string_and_user_data_limit(api: Api) -> None:
    a, b, c = api.ids(status="running")[:3]
    arch = api.server(a)["server_type"]["architecture"]
    image = api.get("/images", params={"name": "debian-12", "architecture": arch}).json()["images"][0]
    assert api.action(a, "rebuild", json={"image": image["id"]}).status_code == 201
    assert api.action(b, "rebuild", json={"image": str(image["id"])}).status_code == 201
    ok = api.action(c, "rebuild", json={"image": "ubuntu-24.04", "user_data": "x" * 32 * 1024})
    assert ok.status_code == 201, ok.text


def test_locked_while_an_action_runs_then_free(api: Api) -> None:
    server_id = api.running_server()
    first = api.action(server_id, "reboot").json()["action"]
    for name in ("poweroff", "reset_password", "create_image", "rebuild"):
        kw = {"json": BODIES[name]} if name in BODIES else {}
        response = api.action(server_id, name, **kw)
        assert response.status_code == 423, name
        assert response.json()["error"]["code"] == "locked"
    api.advance(5)
    assert api.action_status(first["id"])["status"] == "success"
    assert api.action(server_id, "poweroff").status_code == 201


def test_rebuild_protection(api: Api) -> None:
    server_id = api.running_server()
    api.patch_server(server_id, protection={"rebuild": True})
    assert api.server(server_id)["protection"] == {"delete": False, "rebuild": True}
    response = api.action(server_id, "rebuild", json={"image": "ubuntu-24.04"})
    assert response.status_code == 423
    assert response.json()["error"]["code"] == "protected"
    api.patch_server(server_id, protection={"rebuild": False})
    assert api.action(server_id, "rebuild", json={"image": "ubuntu-24.04"}).status_code == 201


def test_poweron_progress_rises_and_status_moves(api: Api) -> None:
    server_id = api.off_server()
    action = api.action(server_id, "poweron").json()["action"]
    assert api.server(server_id)["status"] == "starting"
    api.advance(1)
    first = api.action_status(action["id"])["progress"]
    api.advance(2)
    second = api.action_status(action["id"])
    assert 0 < first < second["progress"] < 100 and second["status"] == "running"
    api.advance(1)
    done = api.action_status(action["id"])
    assert (done["status"], done["progress"], done["error"]) == ("success", 100, None)
    assert done["finished"] is not None and done["finished"] >= done["started"]
    assert api.server(server_id)["status"] == "running"


@pytest.mark.parametrize("name", ["poweroff", "shutdown"])
def test_poweroff_and_shutdown_stop_the_server(api: Api, name: str) -> None:
    server_id = api.running_server()
    api.patch_server(server_id, acpi=True)
    action = api.action(server_id, name).json()["action"]
    assert api.server(server_id)["status"] == "stopping"
    api.advance(5)
    assert api.action_status(action["id"])["status"] == "success"
    assert api.server(server_id)["status"] == "off"


def test_shutdown_ignored_by_guest_succeeds_but_server_keeps_running(api: Api) -> None:
    server_id = api.running_server()
    assert api.patch_server(server_id, acpi=False)["acpi"] is False
    action = api.action(server_id, "shutdown").json()["action"]
    api.advance(10)
    assert api.action_status(action["id"])["status"] == "success"
    assert api.server(server_id)["status"] == "running"
    # The documented fallback works.
    api.action(server_id, "poweroff")
    api.advance(3)
    assert api.server(server_id)["status"] == "off"


def test_noop_actions_succeed(api: Api) -> None:
    on, off = api.running_server(), api.off_server()
    for server_id, name in ((on, "poweron"), (off, "poweroff"), (off, "shutdown")):
        before = api.server(server_id)["status"]
        action = api.action(server_id, name).json()["action"]
        assert api.server(server_id)["status"] == before
        api.advance(5)
        assert api.action_status(action["id"])["status"] == "success"
        assert api.server(server_id)["status"] == before


def test_reboot_and_reset_keep_running_and_reset_starts_an_off_server(api: Api) -> None:
    on, off = api.running_server(), api.off_server()
    api.action(on, "reboot")
    assert api.server(on)["status"] == "running"
    api.advance(5)
    api.action(on, "reset")
    assert api.server(on)["status"] == "running"
    api.action(off, "reset")
    api.advance(4)
    assert api.server(on)["status"] == api.server(off)["status"] == "running"


def test_rebuild_moves_through_rebuilding_and_changes_image(api: Api) -> None:
    server_id = api.running_server()
    action = api.action(server_id, "rebuild", json={"image": "debian-12"}).json()["action"]
    assert api.server(server_id)["status"] == "rebuilding"
    api.advance(29)
    assert api.action_status(action["id"])["status"] == "running"
    api.advance(1)
    server = api.server(server_id)
    assert (server["status"], server["image"]["name"]) == ("running", "debian-12")


def test_create_image_creating_then_available(api: Api) -> None:
    server_id = api.running_server()
    body = api.action(
        server_id, "create_image", json={"description": "before upgrade", "labels": {"run": "r1"}}
    ).json()
    image = body["image"]
    assert (image["type"], image["status"], image["description"], image["labels"]) == (
        "snapshot",
        "creating",
        "before upgrade",
        {"run": "r1"},
    )
    assert image["created_from"]["id"] == server_id and image["name"] is None
    assert api.get(f"/images/{image['id']}").json()["image"]["status"] == "creating"
    assert [i["id"] for i in api.get("/images", params={"label_selector": "run=r1"}).json()["images"]] == [
        image["id"]
    ]
    api.advance(20)
    assert api.action_status(body["action"]["id"])["status"] == "success"
    assert api.get(f"/images/{image['id']}").json()["image"]["status"] == "available"
    backup = api.action(server_id, "create_image", json={"type": "backup"}).json()["image"]
    assert (backup["type"], backup["bound_to"]) == ("backup", server_id)
    api.advance(20)
    rebuilt = api.action(server_id, "rebuild", json={"image": image["id"]})
    assert rebuilt.status_code == 201


def test_failed_create_image_removes_the_image_and_reports_the_error(api: Api) -> None:
    server_id = api.running_server()
    api.patch_server(
        server_id, fail_next={"command": "create_image", "code": "unknown_error", "message": "Unknown Error"}
    )
    body = api.action(server_id, "create_image").json()
    api.advance(20)
    action = api.action_status(body["action"]["id"])
    assert action["status"] == "error"
    assert action["error"] == {"code": "unknown_error", "message": "Unknown Error"}
    assert action["finished"] is not None
    assert api.get(f"/images/{body['image']['id']}").status_code == 404
    # fail_next is one-shot.
    again = api.action(server_id, "create_image").json()
    api.advance(20)
    assert api.action_status(again["action"]["id"])["status"] == "success"


def test_failed_poweron_leaves_the_server_off(api: Api) -> None:
    server_id = api.off_server()
    api.patch_server(server_id, fail_next={"command": "start_server"})
    action = api.action(server_id, "poweron").json()["action"]
    api.advance(4)
    assert api.action_status(action["id"])["error"] == {"code": "action_failed", "message": "Action failed"}
    assert api.server(server_id)["status"] == "off"


def test_rescue_flips_and_is_used_up_by_a_boot(api: Api) -> None:
    server_id = api.running_server()
    key = api.get("/ssh_keys").json()["ssh_keys"][0]["id"]
    body = api.action(server_id, "enable_rescue", json={"type": "linux64", "ssh_keys": [key]}).json()
    assert body["root_password"]
    assert api.server(server_id)["rescue_enabled"] is False
    api.advance(2)
    assert api.server(server_id)["rescue_enabled"] is True
    api.action(server_id, "disable_rescue")
    api.advance(2)
    assert api.server(server_id)["rescue_enabled"] is False
    api.action(server_id, "enable_rescue")
    api.advance(2)
    api.action(server_id, "reset")
    api.advance(4)
    assert api.server(server_id)["rescue_enabled"] is False


def test_reset_password_needs_a_running_server(api: Api) -> None:
    response = api.action(api.off_server(), "reset_password")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsupported_error"
    assert "running" in response.json()["error"]["message"]


def test_zero_duration_action_is_already_finished(make_cloud) -> None:
    api = make_cloud(servers=2, durations={"reset": 0})
    body = api.action(api.running_server(), "reset").json()
    assert (body["action"]["status"], body["action"]["progress"]) == ("success", 100)


def test_speed_divides_durations(make_cloud) -> None:
    api = make_cloud(servers=4, speed=4.0)
    server_id = api.off_server()
    action = api.action(server_id, "poweron").json()["action"]
    api.advance(1)  # 4 s at speed 4
    assert api.action_status(action["id"])["status"] == "success"
    assert api.server(server_id)["status"] == "running"


def test_get_actions_by_ids(api: Api) -> None:
    ids = api.ids(status="running")
    actions = [api.action(i, "reset").json()["action"]["id"] for i in ids[:3]]
    response = api.get(
        "/actions",
        params=[("id", a) for a in actions] + [("id", 1), ("page", 1), ("sort", "status"), ("sort", "id")],
    )
    assert response.status_code == 200
    assert [a["id"] for a in response.json()["actions"]] == sorted(actions)
    desc = api.get("/actions", params=[("id", a) for a in actions] + [("sort", "id:desc")]).json()["actions"]
    assert [a["id"] for a in desc] == sorted(actions, reverse=True)
    missing = api.get("/actions")
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["fields"][0]["name"] == "id"
    assert api.get("/actions", params={"id": "abc"}).status_code == 422
    assert api.get("/actions/1").status_code == 404
    assert api.get(f"/actions/{actions[0]}").json()["action"]["id"] == actions[0]


def test_get_actions_answers_at_most_25(api: Api, make_cloud) -> None:
    big = make_cloud(servers=30)
    actions = [big.action(i, "reset").json()["action"]["id"] for i in big.ids()[:30]]
    body = big.get("/actions", params=[("id", a) for a in actions]).json()
    assert len(body["actions"]) == 25
    assert body["meta"]["pagination"]["next_page"] == 2
    rest = big.get("/actions", params=[("id", a) for a in actions] + [("page", 2)]).json()["actions"]
    assert len(rest) == 5


def test_server_actions_list_filters_sorts_paginates(api: Api) -> None:
    server_id = api.running_server()
    first = api.action(server_id, "reset").json()["action"]["id"]
    api.advance(4)
    second = api.action(server_id, "reboot").json()["action"]["id"]
    body = api.get(f"/servers/{server_id}/actions").json()
    assert [a["id"] for a in body["actions"]] == [first, second]
    assert body["meta"]["pagination"]["total_entries"] == 2
    running = api.get(f"/servers/{server_id}/actions", params={"status": "running"}).json()["actions"]
    assert [a["id"] for a in running] == [second]
    both = api.get(f"/servers/{server_id}/actions?status=running&status=success&sort=id:desc").json()[
        "actions"
    ]
    assert [a["id"] for a in both] == [second, first]
    by_command = api.get(f"/servers/{server_id}/actions?sort=command:asc&sort=id").json()["actions"]
    assert [a["command"] for a in by_command] == ["reboot_server", "reset_server"]
    assert (
        api.get(f"/servers/{server_id}/actions", params={"per_page": 1}).json()["meta"]["pagination"][
            "next_page"
        ]
        == 2
    )
    assert api.get(f"/servers/{server_id}/actions", params={"status": "pending"}).status_code == 422
    assert api.get("/servers/1/actions").status_code == 404
    assert api.get(f"/servers/{server_id}/actions/{first}").json()["action"]["id"] == first


def test_reboot_ignored_by_guest_does_not_boot_into_rescue(api: Api) -> None:
    deaf, hearing = api.ids(status="running")[:2]
    api.patch_server(deaf, acpi=False)
    api.patch_server(hearing, acpi=True)
    for server_id in (deaf, hearing):
        api.action(server_id, "enable_rescue")
    api.advance(2)
    for server_id in (deaf, hearing):
        assert api.action(server_id, "reboot").status_code == 201
    api.advance(5)
    assert api.server(deaf)["rescue_enabled"] is True  # the signal went nowhere
    assert api.server(hearing)["rescue_enabled"] is False  # booted into rescue, which uses it up
    assert api.server(deaf)["status"] == api.server(hearing)["status"] == "running"


def test_rebuild_rejects_an_image_of_the_other_architecture(api: Api) -> None:
    server_id = api.running_server()
    arch = api.server(server_id)["server_type"]["architecture"]
    other = "arm" if arch == "x86" else "x86"
    image = api.get("/images", params={"name": "debian-12", "architecture": other}).json()["images"][0]
    response = api.action(server_id, "rebuild", json={"image": image["id"]})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["name"] == "image"

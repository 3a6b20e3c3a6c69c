"""The /_fakecloud controls: stats, request log, reset, seed, config, server patches, clock, secrets."""

from __future__ import annotations

import requests

import fakecloud


def test_stats_count_v1_traffic_by_route_template(api) -> None:
    server_id = api.running_server()
    for _ in range(3):
        api.action(server_id, "shutdown")
    api.get("/servers/1")
    stats = api.ctl("GET", "/stats").json()
    rows = {(r["method"], r["route"], r["status"]): r["count"] for r in stats["requests"]}
    assert rows[("POST", "/servers/{id}/actions/shutdown", 201)] == 1
    assert rows[("POST", "/servers/{id}/actions/shutdown", 423)] == 2
    assert rows[("GET", "/servers/{id}", 404)] == 1
    assert rows[("GET", "/servers", 200)] == 1
    assert stats["total"] == 5 and stats["rate_limited"] == 0


def test_request_log_since_and_fields(api) -> None:
    server_id = api.running_server()
    created = api.action(server_id, "reboot").json()["action"]["id"]
    api.action(server_id, "reboot")
    log = api.ctl("GET", "/requests", params={"since": 0}).json()
    entries = log["requests"]
    assert [e["seq"] for e in entries] == [1, 2, 3] and log["next"] == 3
    first, ok, locked = entries
    assert set(ok) == {
        "seq",
        "time",
        "method",
        "path",
        "route",
        "status",
        "server_id",
        "action_id",
        "command",
        "dropped",
    }
    assert (first["server_id"], first["action_id"], first["command"]) == (None, None, None)
    assert ok == {
        "seq": 2,
        "time": ok["time"],
        "method": "POST",
        "path": f"/servers/{server_id}/actions/reboot",
        "route": "/servers/{id}/actions/reboot",
        "status": 201,
        "server_id": server_id,
        "action_id": created,
        "command": "reboot",
        "dropped": False,
    }
    assert (locked["status"], locked["action_id"], locked["command"]) == (423, None, "reboot")
    assert ok["time"] == api.fc.backend.clock.now()
    assert api.ctl("GET", "/requests", params={"since": 3}).json() == {"requests": [], "next": 3}
    assert [e["seq"] for e in api.ctl("GET", "/requests?since=1&limit=1").json()["requests"]] == [2]


def test_reset_gives_a_fresh_project(api) -> None:
    server_id = api.running_server()
    api.action(server_id, "poweroff")
    body = api.ctl("POST", "/reset", json={"servers": 3, "seed": 5}).json()
    assert len(body["servers"]) == 3
    assert api.ctl("GET", "/stats").json()["total"] == 0
    assert api.ctl("GET", "/requests").json()["requests"] == []
    assert len(api.get("/servers").json()["servers"]) == 3
    assert api.get(f"/servers/{server_id}/actions").json()["actions"] == []
    assert api.ctl("POST", "/reset").status_code == 200  # body optional
    assert api.ctl("GET", "/config").json()["seed"] == 5


def test_seed_adds_servers_with_given_labels(api) -> None:
    ids = api.ctl("POST", "/seed", json={"servers": 3, "labels": {"pool": "canary"}}).json()["ids"]
    assert len(ids) == 3
    found = api.get("/servers", params={"label_selector": "pool=canary"}).json()["servers"]
    assert [s["id"] for s in found] == ids
    assert [s["name"] for s in found] == ["srv-13", "srv-14", "srv-15"]
    assert api.ctl("POST", "/seed", json={"servers": -1}).status_code == 422


def test_config_get_and_put(api) -> None:
    config = api.ctl("GET", "/config").json()
    assert {"speed", "rate_limit", "durations", "faults"} <= set(config)
    assert config["durations"]["rebuild"] == 30.0 and config["clock"] == "manual"
    updated = api.ctl(
        "PUT", "/config", json={"durations": {"rebuild": 2, "start_server": 1}, "speed": 2}
    ).json()
    assert (updated["durations"]["rebuild"], updated["durations"]["poweron"], updated["speed"]) == (
        2.0,
        1.0,
        2.0,
    )
    assert updated["durations"]["reboot"] == 5.0
    for bad in ({"speed": 0}, {"rate_limit": 0}, {"durations": {"fly": 1}}, {"colour": "red"}):
        response = api.ctl("PUT", "/config", json=bad)
        assert response.status_code == 422, bad
    assert api.ctl("PUT", "/config", data=b"{oops").status_code == 400
    server_id = api.off_server()
    api.action(server_id, "poweron")
    api.advance(0.5)
    assert api.server(server_id)["status"] == "running"


def test_patch_server(api) -> None:
    server_id = api.running_server()
    body = api.patch_server(
        server_id, status="off", labels={"k": "v"}, protection={"delete": True}, acpi=False
    )
    assert body["server"]["status"] == "off" and body["server"]["labels"] == {"k": "v"}
    assert body["server"]["protection"] == {"delete": True, "rebuild": False}
    assert body["acpi"] is False
    assert api.ctl("PATCH", "/servers/1", json={}).status_code == 404
    assert api.ctl("PATCH", f"/servers/{server_id}", json={"status": "dancing"}).status_code == 422
    assert (
        api.ctl("PATCH", f"/servers/{server_id}", json={"fail_next": {"command": "fly"}}).status_code == 422
    )


def test_clock_advance_needs_a_manual_clock(api) -> None:
    before = api.ctl("GET", "/config").json()["now"]
    assert api.ctl("POST", "/clock/advance", json={"seconds": 2.5}).json() == {"now": before + 2.5}
    assert api.ctl("POST", "/clock/advance", json={"seconds": -1}).status_code == 422
    with fakecloud.start(servers=1) as real:
        response = requests.post(real.control_url + "/clock/advance", json={"seconds": 1}, timeout=10)
        assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_secrets_lists_every_root_password(api) -> None:
    a, b = api.ids(status="running")[:2]
    passwords = [
        api.action(a, "reset_password").json()["root_password"],
        api.action(b, "enable_rescue").json()["root_password"],
    ]
    api.advance(3)
    passwords.append(api.action(a, "rebuild", json={"image": "ubuntu-24.04"}).json()["root_password"])
    assert api.ctl("GET", "/secrets").json() == {"root_passwords": passwords, "token": "test-token"}


def test_unknown_control_route(api) -> None:
    assert api.ctl("GET", "/nothing").status_code == 404
    assert api.ctl("DELETE", "/stats").status_code == 405


def test_backend_is_reachable_directly(api) -> None:
    backend = api.fc.backend
    ids = backend.seed_servers(2, labels={"direct": "yes"}, status="off")
    assert [
        s["id"] for s in api.get("/servers", params={"label_selector": "direct"}).json()["servers"]
    ] == ids
    backend.reset(servers=1)
    assert len(api.get("/servers").json()["servers"]) == 1


def test_placement_groups_are_served_as_the_api_does(api) -> None:
    one, two, three = api.ids()[:3]
    made = api.ctl(
        "POST", "/placement_groups", json={"name": "web-spread", "servers": [one, two], "labels": {"a": "b"}}
    )
    assert made.status_code == 201, made.text
    group = made.json()["placement_group"]
    assert set(group) == {"id", "name", "labels", "type", "servers", "created"}
    assert (group["type"], group["servers"], group["labels"]) == ("spread", [one, two], {"a": "b"})
    listed = api.get("/placement_groups", params={"type": "spread"}).json()
    assert [g["name"] for g in listed["placement_groups"]] == ["web-spread"] and listed["meta"]["pagination"]
    assert api.get("/placement_groups", params={"label_selector": "a=c"}).json()["placement_groups"] == []
    assert api.get(f"/placement_groups/{group['id']}").json()["placement_group"]["servers"] == [one, two]
    assert api.get("/placement_groups/99").status_code == 404
    assert api.get(f"/servers/{one}").json()["server"]["placement_group"]["name"] == "web-spread"
    assert api.get(f"/servers/{three}").json()["server"]["placement_group"] is None
    assert api.ctl("POST", "/placement_groups", json={"name": "web-spread"}).status_code == 409
    too_many = api.ctl("POST", "/placement_groups", json={"name": "big", "servers": api.ids()[:11]})
    assert too_many.status_code == 422 and "at most 10" in too_many.text


def test_load_balancers_targets_health_and_target_actions(api) -> None:
    one, two, three = api.ids(status="running")[:3]
    api.ctl("PATCH", f"/servers/{three}", json={"labels": {"role": "lbweb"}})
    made = api.ctl(
        "POST", "/load_balancers", json={"name": "lb-web", "ports": [80, 443], "servers": [one, two],
                                         "selectors": ["role=lbweb"], "health_delay": 0.5},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    lb = made.json()["load_balancer"]
    direct = [t for t in lb["targets"] if t["type"] == "server"]
    assert [t["server"]["id"] for t in direct] == [one, two]
    assert direct[0]["health_status"] == [
        {"listen_port": 80, "status": "healthy"},
        {"listen_port": 443, "status": "healthy"},
    ]
    selector = next(t for t in lb["targets"] if t["type"] == "label_selector")
    assert selector["label_selector"] == {"selector": "role=lbweb"}
    assert [t["server"]["id"] for t in selector["targets"]] == [three]
    assert api.get(f"/servers/{one}").json()["server"]["load_balancers"] == [lb["id"]]
    assert api.get(f"/servers/{three}").json()["server"]["load_balancers"] == [lb["id"]]
    assert [x["name"] for x in api.get("/load_balancers").json()["load_balancers"]] == ["lb-web"]

    removed = api.post(
        f"/load_balancers/{lb['id']}/actions/remove_target", json={"type": "server", "server": {"id": one}}
    )
    assert removed.status_code == 201, removed.text
    action = removed.json()["action"]
    assert (action["command"], action["status"]) == ("remove_target", "success")
    assert action["resources"] == [{"id": lb["id"], "type": "load_balancer"}]
    assert api.get("/actions", params={"id": action["id"]}).json()["actions"][0]["id"] == action["id"]
    assert api.get("/servers/actions", params={"id": action["id"]}).json()["actions"] == [], "not a server's"
    again = api.post(
        f"/load_balancers/{lb['id']}/actions/remove_target", json={"type": "server", "server": {"id": one}}
    )
    assert again.status_code == 422 and again.json()["error"]["code"] == "load_balancer_target_not_found"
    assert api.get(f"/servers/{one}").json()["server"]["load_balancers"] == []

    added = api.post(
        f"/load_balancers/{lb['id']}/actions/add_target", json={"type": "server", "server": {"id": one}}
    )
    assert added.status_code == 201
    fresh = api.get(f"/load_balancers/{lb['id']}").json()["load_balancer"]
    status = {
        t["server"]["id"]: t["health_status"][0]["status"] for t in fresh["targets"] if t["type"] == "server"
    }
    assert status[one] == "unknown", "a new target's first health checks are not done"
    twice = api.post(
        f"/load_balancers/{lb['id']}/actions/add_target", json={"type": "server", "server": {"id": one}}
    )
    assert twice.status_code == 422 and twice.json()["error"]["code"] == "target_already_defined"
    api.ctl("PATCH", f"/servers/{two}", json={"status": "off"})
    fresh = api.get(f"/load_balancers/{lb['id']}").json()["load_balancer"]
    status = {
        t["server"]["id"]: t["health_status"][0]["status"] for t in fresh["targets"] if t["type"] == "server"
    }
    assert status[two] == "unhealthy", "the health follows the server's power state"
    assert api.get("/load_balancers/99").status_code == 404

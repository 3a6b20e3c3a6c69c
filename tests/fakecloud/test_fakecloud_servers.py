"""GET /servers, GET /servers/{id}: object shape, filters, label selectors, sorting, pagination."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Api

SERVER_KEYS = {
    "id",
    "name",
    "status",
    "created",
    "public_net",
    "private_net",
    "server_type",
    "location",
    "image",
    "iso",
    "rescue_enabled",
    "locked",
    "backup_window",
    "outgoing_traffic",
    "ingoing_traffic",
    "included_traffic",
    "primary_disk_size",
    "protection",
    "labels",
    "volumes",
    "load_balancers",
    "placement_group",
}
IMAGE_KEYS = {
    "id",
    "type",
    "status",
    "name",
    "description",
    "image_size",
    "disk_size",
    "created",
    "created_from",
    "bound_to",
    "os_flavor",
    "os_version",
    "architecture",
    "rapid_deploy",
    "protection",
    "deprecated",
    "deprecation",
    "deleted",
    "labels",
}


def test_server_object_has_every_documented_key(api: Api) -> None:
    server = api.get("/servers").json()["servers"][0]
    assert set(server) == SERVER_KEYS
    assert set(server["protection"]) == {"delete", "rebuild"}
    assert set(server["public_net"]) >= {"ipv4", "ipv6", "floating_ips", "firewalls"}
    assert {"id", "ip", "blocked", "dns_ptr"} <= set(server["public_net"]["ipv4"])
    assert set(server["image"]) == IMAGE_KEYS
    assert {"id", "name", "cores", "memory", "disk", "architecture", "prices"} <= set(server["server_type"])
    assert {"id", "name", "city", "country", "network_zone"} <= set(server["location"])
    assert isinstance(server["id"], int)
    datetime.fromisoformat(server["created"])  # RFC 3339


def test_get_server_by_id_and_unknown_id(api: Api) -> None:
    first = api.get("/servers").json()["servers"][0]
    response = api.get(f"/servers/{first['id']}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"server": first}
    missing = api.get("/servers/1")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_seeded_fleet_is_deterministic_and_mixed(api: Api, make_cloud) -> None:
    servers = api.get("/servers", params={"per_page": 50}).json()["servers"]
    assert [s["name"] for s in servers] == [f"srv-{i}" for i in range(1, 13)]
    assert {s["status"] for s in servers} == {"running", "off"}
    assert {s["labels"]["env"] for s in servers} >= {"production", "staging"}
    assert any("role" not in s["labels"] for s in servers)
    again = make_cloud(servers=12, seed=1).get("/servers", params={"per_page": 50}).json()["servers"]
    assert [(s["id"], s["labels"], s["status"]) for s in again] == [
        (s["id"], s["labels"], s["status"]) for s in servers
    ]


def test_filter_by_name_and_repeated_status(api: Api) -> None:
    assert [s["name"] for s in api.get("/servers", params={"name": "srv-3"}).json()["servers"]] == ["srv-3"]
    assert api.get("/servers", params={"name": "nope"}).json()["servers"] == []
    all_ids = api.ids()
    running, off = api.ids(status="running"), api.ids(status="off")
    both = api.get("/servers?status=running&status=off&per_page=50").json()["servers"]
    assert sorted(s["id"] for s in both) == sorted(running + off) == sorted(all_ids)
    bad = api.get("/servers", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["fields"][0]["name"] == "status"


def _names(api: Api, selector: str) -> set[str]:
    response = api.get("/servers", params={"label_selector": selector, "per_page": 50})
    assert response.status_code == 200, response.text
    return {s["name"] for s in response.json()["servers"]}


def _expected(api: Api, predicate) -> set[str]:
    servers = api.get("/servers", params={"per_page": 50}).json()["servers"]
    return {s["name"] for s in servers if predicate(s["labels"])}


@pytest.mark.parametrize(
    ("selector", "predicate"),
    [
        ("env=production", lambda lb: lb.get("env") == "production"),
        ("env==production", lambda lb: lb.get("env") == "production"),
        ("env!=production", lambda lb: lb.get("env") != "production"),
        ("env in (staging,testing)", lambda lb: lb.get("env") in ("staging", "testing")),
        ("env notin (staging, testing)", lambda lb: lb.get("env") not in ("staging", "testing")),
        ("role", lambda lb: "role" in lb),
        ("!role", lambda lb: "role" not in lb),
        ("env=production,role=web", lambda lb: lb.get("env") == "production" and lb.get("role") == "web"),
        (
            "env in (production,staging),!team",
            lambda lb: lb.get("env") in ("production", "staging") and "team" not in lb,
        ),
        ("role!=db,role", lambda lb: "role" in lb and lb["role"] != "db"),
    ],
)
def test_label_selectors(api: Api, selector: str, predicate) -> None:
    expected = _expected(api, predicate)
    assert expected, "the seeded fleet should exercise every selector"
    assert _names(api, selector) == expected


@pytest.mark.parametrize(
    "selector", ["env=", "=x", "env in (a", "env in a,b)", "env===x", "!", "-bad-=x", "a b"]
)
def test_malformed_label_selector_is_invalid_input(api: Api, selector: str) -> None:
    if selector == "env=":
        # An empty value is legal ("values may be empty"): it matches nothing here.
        assert _names(api, selector) == set()
        return
    response = api.get("/servers", params={"label_selector": selector})
    assert response.status_code == 422, selector
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["fields"][0]["name"] == "label_selector"


def test_sort_by_name_desc_and_repeated_sort(api: Api) -> None:
    names = [s["name"] for s in api.get("/servers?sort=name:desc&per_page=50").json()["servers"]]
    assert names == sorted(names, reverse=True)
    servers = api.get("/servers?sort=created:asc&sort=id:desc&per_page=50").json()["servers"]
    keys = [(s["created"], -s["id"]) for s in servers]
    assert keys == sorted(keys)
    assert api.get("/servers?sort=colour").status_code == 422


def test_pagination_meta_link_and_limits(api: Api, make_cloud) -> None:
    big = make_cloud(servers=60)
    first = big.get("/servers")
    meta = first.json()["meta"]["pagination"]
    assert len(first.json()["servers"]) == 25
    assert meta == {
        "page": 1,
        "per_page": 25,
        "previous_page": None,
        "next_page": 2,
        "last_page": 3,
        "total_entries": 60,
    }
    assert 'rel="next"' in first.headers["Link"] and 'rel="last"' in first.headers["Link"]
    assert 'rel="prev"' not in first.headers["Link"]
    last = big.get("/servers", params={"page": 3})
    meta = last.json()["meta"]["pagination"]
    assert (len(last.json()["servers"]), meta["previous_page"], meta["next_page"]) == (10, 2, None)
    assert 'rel="prev"' in last.headers["Link"]
    clamped = big.get("/servers", params={"per_page": 500}).json()
    assert clamped["meta"]["pagination"]["per_page"] == 50 and len(clamped["servers"]) == 50
    assert big.get("/servers", params={"page": 9}).json()["servers"] == []
    for bad in ({"page": 0}, {"per_page": "x"}, {"page": -1}):
        response = big.get("/servers", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"]["fields"][0]["name"] in ("page", "per_page")
    seen, page = [], 1
    while page:
        body = big.get("/servers", params={"page": page, "per_page": 7}).json()
        seen += [s["id"] for s in body["servers"]]
        page = body["meta"]["pagination"]["next_page"]
    assert len(seen) == len(set(seen)) == 60
    assert math.ceil(60 / 7) == body["meta"]["pagination"]["last_page"]


def test_images_and_ssh_keys(api: Api) -> None:
    images = api.get("/images", params={"type": "system", "per_page": 50}).json()["images"]
    names = {i["name"] for i in images}
    assert {"ubuntu-24.04", "debian-12", "ubuntu-22.04"} <= names
    assert "ubuntu-20.04" not in names  # deprecated images are hidden unless asked for
    with_old = api.get("/images", params={"include_deprecated": "true", "name": "ubuntu-20.04"}).json()[
        "images"
    ]
    assert with_old and with_old[0]["deprecated"] is not None
    # Since 2026-09-08 the API says it in a deprecation object, the only field hcloud-python >= 2.24 reads.
    deprecation = with_old[0]["deprecation"]
    assert set(deprecation) == {"announced", "unavailable_after"}
    assert deprecation["announced"] == with_old[0]["deprecated"]
    assert datetime.fromisoformat(deprecation["unavailable_after"]) > datetime.fromisoformat(
        deprecation["announced"]
    )
    assert all(i["deprecation"] is None for i in images)
    image = images[0]
    assert set(image) == IMAGE_KEYS
    assert api.get(f"/images/{image['id']}").json() == {"image": image}
    assert api.get("/images/1").status_code == 404
    assert api.get("/images", params={"status": "creating"}).json()["images"] == []
    assert api.get("/images", params={"type": "weird"}).status_code == 422
    arm = api.get("/images", params={"name": "ubuntu-24.04", "architecture": "arm"}).json()["images"]
    assert [i["architecture"] for i in arm] == ["arm"]
    sorted_desc = api.get("/images", params={"sort": "id:desc"}).json()["images"]
    assert [i["id"] for i in sorted_desc] == sorted((i["id"] for i in sorted_desc), reverse=True)

    keys = api.get("/ssh_keys").json()
    assert keys["meta"]["pagination"]["total_entries"] == len(keys["ssh_keys"]) >= 2
    key = keys["ssh_keys"][0]
    assert set(key) == {"id", "name", "fingerprint", "public_key", "labels", "created"}
    assert api.get(f"/ssh_keys/{key['id']}").json() == {"ssh_key": key}
    assert api.get("/ssh_keys", params={"name": key["name"]}).json()["ssh_keys"] == [key]
    assert (
        api.get("/ssh_keys", params={"label_selector": "team=ci"}).json()["ssh_keys"][0]["name"] == "deploy"
    )
    assert api.get("/ssh_keys/5").status_code == 404


def test_put_server_renames_and_replaces_labels_as_the_api_does(api: Api) -> None:
    """PUT /servers/{id} (name and labels; the labels given replace the set), as Ansible's
    hetzner.hcloud updates a server's labels."""
    one, two = api.ids()[:2]
    url = f"/servers/{one}"
    changed = api.request("PUT", url, json={"labels": {"role": "db", "env": "prod"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["server"]["labels"] == {"role": "db", "env": "prod"}
    renamed = api.request("PUT", url, json={"name": "db-1.example"})
    assert renamed.json()["server"]["name"] == "db-1.example"
    assert renamed.json()["server"]["labels"] == {"role": "db", "env": "prod"}, "labels not given stay"
    assert api.get("/servers", params={"label_selector": "role=db"}).json()["servers"][0]["id"] == one
    taken = api.request("PUT", f"/servers/{two}", json={"name": "db-1.example"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "uniqueness_error"
    bad = api.request("PUT", url, json={"name": "not a hostname"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    bad_labels = api.request("PUT", url, json={"labels": {"": "x"}})
    assert bad_labels.status_code == 422
    assert api.request("PUT", "/servers/999999999", json={}).status_code == 404

"""Around the JSON: HEAD, unreadable bodies, the Date header, SSH key material, /servers/actions."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import struct
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from conftest import Api


def _auth(api: Api) -> str:
    return f"Bearer {api.fc.token}"


def _raw(api: Api, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    url = urlsplit(api.fc.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_head_is_get_without_content(api: Api) -> None:
    get = api.get("/servers")
    head, body = _raw(api, "HEAD", "/v1/servers", {"Authorization": _auth(api)})
    assert (head.status, body) == (200, b"")
    assert head.getheader("Content-Type") == "application/json"
    assert int(head.getheader("Content-Length")) == len(get.content)
    assert head.getheader("X-Correlation-Id")
    # It spends a rate token like the GET it stands for.
    assert int(head.getheader("RateLimit-Remaining")) == int(get.headers["RateLimit-Remaining"]) - 1


def test_unreadable_body_is_a_json_400_with_the_usual_headers(api: Api) -> None:
    server_id = api.running_server()
    response, body = _raw(
        api,
        "POST",
        f"/v1/servers/{server_id}/actions/poweroff",
        {"Authorization": _auth(api), "Content-Length": "ten"},
    )
    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Correlation-Id") and response.getheader("RateLimit-Remaining")
    assert response.getheader("Connection") == "close"
    assert b'"json_error"' in body
    assert api.server(server_id)["status"] == "running"


def test_date_header_and_rate_limit_reset_share_one_clock(api: Api) -> None:
    # ISSUE-J: remaining 3598 at Date T gave reset T + 2. A manual clock keeps that arithmetic exact.
    start = api.fc.backend.clock.now()
    api.get("/servers")
    response = api.get("/servers")
    assert response.headers["Date"] == formatdate(start, usegmt=True)
    assert response.headers["RateLimit-Remaining"] == "3598"
    date = parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert int(response.headers["RateLimit-Reset"]) - date == 2
    api.advance(3600)
    assert parsedate_to_datetime(api.get("/servers").headers["Date"]).timestamp() == start + 3600


def test_ssh_key_is_a_well_formed_openssh_key_with_its_md5_fingerprint(api: Api) -> None:
    for key in api.get("/ssh_keys").json()["ssh_keys"]:
        kind, data, _comment = key["public_key"].split(" ")
        blob = base64.b64decode(data, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        assert (kind, blob[4 : 4 + length]) == ("ssh-ed25519", b"ssh-ed25519")
        (key_length,) = struct.unpack(">I", blob[4 + length : 8 + length])
        assert key_length == 32 == len(blob) - 8 - length
        digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
        assert key["fingerprint"] == ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def test_servers_actions_lists_and_gets_the_actions_of_every_server(api: Api) -> None:
    a, b = api.ids(status="running")[:2]
    first = api.action(a, "reset").json()["action"]["id"]
    second = api.action(b, "reboot").json()["action"]["id"]
    api.advance(4)  # the reset is done, the reboot (5 s) is not
    body = api.get("/servers/actions").json()
    assert [x["id"] for x in body["actions"]] == [first, second]
    assert body["meta"]["pagination"]["total_entries"] == 2
    running = api.get("/servers/actions", params={"status": "running"}).json()["actions"]
    assert [x["id"] for x in running] == [second]
    by_id = api.get("/servers/actions", params=[("id", second), ("id", 1), ("sort", "id:desc")]).json()
    assert [x["id"] for x in by_id["actions"]] == [second]
    paged = api.get("/servers/actions", params={"per_page": 1, "sort": "id:desc"})
    assert [x["id"] for x in paged.json()["actions"]] == [second]
    assert 'rel="next"' in paged.headers["Link"]
    assert api.get("/servers/actions", params={"sort": "colour"}).status_code == 422
    one = api.get(f"/servers/actions/{first}")
    assert one.status_code == 200 and one.json() == {"action": api.action_status(first)}
    missing = api.get("/servers/actions/1")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert api.post("/servers/actions").status_code == 405


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/actions?id=%C2%B2", "id"),  # "²": str.isdigit() says yes, int() says no
        ("/actions?id=%D9%A3", "id"),  # "٣": an Arabic-Indic 3, which int() would take
        ("/servers?page=%C2%B2", "page"),
        ("/servers?per_page=%D9%A3", "per_page"),
        ("/images?bound_to=%C2%B2", "bound_to"),
        ("/servers/actions?id=%C2%B2", "id"),
        # int() refuses more than 4300 digits
        pytest.param("/servers?page=" + "9" * 5000, "page", id="page-of-5000-digits"),
    ],
)
def test_non_ascii_digits_are_invalid_input_not_a_crash(api: Api, path: str, field: str) -> None:
    response = api.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["fields"][0]["name"] == field


def test_rebuild_image_of_non_ascii_digits_is_invalid_input(api: Api) -> None:
    response = api.action(api.running_server(), "rebuild", json={"image": "²"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["fields"][0]["name"] == "image"
    assert api.ctl("GET", "/requests", params={"since": "²"}).status_code == 422


def test_absurd_ids_and_nesting_are_client_errors(api: Api) -> None:
    assert api.get("/servers/" + "9" * 5000).status_code == 404
    assert api.get("/servers/" + "9" * 25).status_code == 404
    nested = b"[" * 100_000 + b"]" * 100_000
    response = api.action(api.running_server(), "poweroff", data=nested)
    assert response.status_code == 400 and response.json()["error"]["code"] == "json_error"


def test_encoded_selector_repeated_keys_and_accept_header_on_the_raw_wire(api: Api) -> None:
    # As hcloud-go sends it: every value percent-encoded, keys repeated, an Accept header, no body.
    path = (
        "/v1/servers?label_selector=env%3Dproduction%2Crole%21%3Ddb&status=running&status=off&sort=id%3Adesc"
    )
    response, body = _raw(api, "GET", path, {"Authorization": _auth(api), "Accept": "application/json"})
    assert response.status == 200
    servers = json.loads(body)["servers"]
    expected = [
        s["id"]
        for s in api.get("/servers", params={"per_page": 50}).json()["servers"]
        if s["labels"]["env"] == "production" and s["labels"].get("role") != "db"
    ]
    assert expected and [s["id"] for s in servers] == sorted(expected, reverse=True)

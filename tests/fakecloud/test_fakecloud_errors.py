"""Error answers: shape, 401, 404, 405, headers on every /v1 answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from conftest import Api


def _assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic dGVzdC10b2tlbg==", "Bearer", "test-token"])
def test_missing_or_wrong_token_is_401(api: Api, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    response = requests.get(api.fc.base_url + "/servers", headers=headers, timeout=10)
    _assert_error(response, 401, "unauthorized")
    assert response.headers["RateLimit-Remaining"]


def test_wrong_token_cannot_start_actions(api: Api) -> None:
    server_id = api.running_server()
    response = requests.post(
        f"{api.fc.base_url}/servers/{server_id}/actions/poweroff",
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    _assert_error(response, 401, "unauthorized")
    assert api.server(server_id)["status"] == "running"


def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    response = requests.get(
        api.fc.base_url + "/servers", headers={"Authorization": "bearer test-token"}, timeout=10
    )
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/nothing", "/servers/abc", "/servers/1/actions/fly", "/actions/x"])
def test_unknown_route_is_404_not_found(api: Api, path: str) -> None:
    _assert_error(api.get(path), 404, "not_found")


def test_outside_v1_is_404(api: Api) -> None:
    response = requests.get(api.fc.base_url.removesuffix("/v1") + "/v2/servers", timeout=10)
    _assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/servers", "GET, HEAD"),
        ("DELETE", "/servers/50000001", "GET, HEAD, PUT"),
        ("GET", "/servers/50000001/actions/poweron", "POST"),
        ("PUT", "/actions/1", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(api: Api, method: str, path: str, allow: str) -> None:
    response = api.request(method, path)
    _assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow  # RFC 9110 §15.5.6: a 405 must list what is allowed


def test_every_v1_answer_has_rate_limit_and_correlation_headers(api: Api) -> None:
    answers = [
        api.get("/servers"),
        api.get("/nothing"),
        api.post("/servers"),
        api.get("/actions/1"),
        requests.get(api.fc.base_url + "/servers", timeout=10),
    ]
    ids = set()
    for response in answers:
        for header in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert response.headers[header].isdigit(), header
        ids.add(response.headers["X-Correlation-Id"])
        int(response.headers["X-Correlation-Id"], 16)
    assert len(ids) == len(answers)


def test_keep_alive_reuses_one_connection(api: Api) -> None:
    first = api.get("/servers")
    second = api.get("/servers")
    assert first.headers.get("Connection") != "close" and second.status_code == 200
    assert len(api.session.adapters["http://"].poolmanager.pools) == 1


def test_chunked_request_body_is_read(api: Api) -> None:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(api.fc.base_url)
    server_id = api.running_server()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/v1/servers/{server_id}/actions/rebuild",
            body=iter([b'{"image": ', b'"ubuntu-24.04"}']),
            headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 201, response.read()
        response.read()
        # The connection stays usable for the next request (keep-alive).
        conn.request("GET", f"/v1/servers/{server_id}", headers={"Authorization": "Bearer test-token"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()

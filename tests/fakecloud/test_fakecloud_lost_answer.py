"""The lost answer (``drop_answer``): an action POST takes effect, and its answer never arrives."""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import requests

if TYPE_CHECKING:
    from conftest import Api

ROUTE = "/servers/{id}/actions/reset"


def _dropped(api: Api, server_id: int, name: str = "reset", **kw: Any) -> requests.ConnectionError:
    with pytest.raises(requests.ConnectionError) as caught:
        api.action(server_id, name, **kw)
    return caught.value


def _config(api: Api) -> dict[str, Any]:
    return api.ctl("GET", "/config").json()


def _log(api: Api) -> list[dict[str, Any]]:
    return api.ctl("GET", "/requests").json()["requests"]


def _rows(api: Api) -> dict[tuple[str, str, int], int]:
    return {
        (r["method"], r["route"], r["status"]): r["count"]
        for r in api.ctl("GET", "/stats").json()["requests"]
    }


def test_a_dropped_post_aborts_the_connection_yet_its_action_runs(api: Api) -> None:
    server_id = api.running_server()
    assert api.ctl("PUT", "/config", json={"drop_answer_next": 1}).json()["drop_answer_next"] == 1

    error = _dropped(api, server_id)
    # requests wraps http.client's "no status line, just EOF": ProtocolError('Connection aborted.', ...).
    assert "Connection aborted" in str(error)
    assert isinstance(error.args[0].args[1], http.client.RemoteDisconnected)

    actions = api.get(f"/servers/{server_id}/actions").json()["actions"]
    assert [(a["command"], a["status"]) for a in actions] == [("reset_server", "running")]
    action_id = actions[0]["id"]

    # The lock is real: the client's blind retry meets 423, as against the real API.
    locked = api.action(server_id, "reset")
    assert locked.status_code == 423 and locked.json()["error"]["code"] == "locked"

    first, second = [e for e in _log(api) if e["method"] == "POST"]
    assert (first["status"], first["action_id"], first["command"], first["dropped"]) == (
        201,
        action_id,
        "reset",
        True,
    )
    assert (second["status"], second["dropped"]) == (423, False)
    stats = api.ctl("GET", "/stats").json()
    assert stats["injected_faults"] == {"drop_answer": 1}
    assert _rows(api)[("POST", ROUTE, 201)] == 1 and _rows(api)[("POST", ROUTE, 423)] == 1
    assert _config(api)["drop_answer_next"] == 0
    assert api.ctl("GET", "/actions").json()["actions"][0]["id"] == action_id

    api.advance(4)
    assert api.action_status(action_id)["status"] == "success"
    assert api.action(server_id, "reset").status_code == 201  # the lock went with the action


def test_not_one_byte_of_the_answer_is_written(api: Api) -> None:
    server_id = api.running_server()
    api.ctl("PUT", "/config", json={"drop_answer_next": 1})
    url = urlsplit(api.fc.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST {url.path}/servers/{server_id}/actions/poweroff HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {api.fc.token}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        assert sock.recv(65536) == b""  # EOF, where the status line should have been
    assert api.server(server_id)["status"] == "stopping"


def test_drop_answer_next_drops_exactly_n(make_cloud) -> None:
    api = make_cloud(servers=6)
    ids = api.ids()
    api.ctl("PUT", "/config", json={"drop_answer_next": 3})
    outcomes = []
    for server_id in ids[:5]:
        try:
            outcomes.append(api.action(server_id, "reset").status_code)
        except requests.ConnectionError:
            outcomes.append("dropped")
        if len(outcomes) == 1:
            assert _config(api)["drop_answer_next"] == 2  # GET shows what is left
    assert outcomes == ["dropped", "dropped", "dropped", 201, 201]
    assert [e["dropped"] for e in _log(api) if e["method"] == "POST"] == [True, True, True, False, False]
    started = {a["server_id"] for a in api.ctl("GET", "/actions").json()["actions"]}
    assert started == set(ids[:5])  # dropped or not, every POST started its action
    assert api.ctl("GET", "/stats").json()["injected_faults"] == {"drop_answer": 3}
    assert _config(api)["drop_answer_next"] == 0


def test_refused_posts_and_gets_keep_their_answers(make_cloud) -> None:
    api = make_cloud(servers=3, faults="drop_answer=1")
    server_id = api.running_server()
    api.ctl("PUT", "/config", json={"drop_answer_next": 5})
    paths = [
        "/servers",
        f"/servers/{server_id}",
        f"/servers/{server_id}/actions",
        "/servers/actions",
        "/images",
    ]
    for _ in range(10):
        for path in paths:
            assert api.get(path).status_code == 200
    assert api.request("HEAD", "/servers").status_code == 200
    bad = api.action(server_id, "rebuild", json={"image": "no-such-image"})
    assert bad.status_code == 422  # refused: nothing started, so nothing to lose
    assert _config(api)["drop_answer_next"] == 5  # none of that used up an armed drop
    assert not any(e["dropped"] for e in _log(api))

    _dropped(api, server_id)
    assert api.action(server_id, "reset").status_code == 423  # the 423 is answered, even at P=1
    assert _config(api)["drop_answer_next"] == 4


@pytest.mark.parametrize("spec", ["502=0.3", "502=0.3,drop_answer=0"])
def test_probability_zero_drops_nothing_and_throws_no_die(make_cloud, spec: str) -> None:
    api = make_cloud(servers=2, seed=4, faults=spec, durations={"reset": 0})
    statuses = [api.action(50_000_001, "reset").status_code for _ in range(60)]
    # The documented dice: one random.Random(seed), one die per request. A drop die thrown after each 201
    # (even at P=0) would shift every later draw, so the sequence pins that none is thrown.
    dice = random.Random(4)
    assert statuses == [502 if dice.random() < 0.3 else 201 for _ in range(60)]
    assert set(statuses) == {201, 502}

    api = make_cloud(servers=2, faults="drop_answer=0", durations={"reset": 0})
    assert all(api.action(50_000_001, "reset").status_code == 201 for _ in range(50))
    assert api.ctl("GET", "/stats").json()["injected_faults"] == {}


def test_probability_is_seeded(make_cloud) -> None:
    def pattern(seed: int) -> list[bool]:
        api = make_cloud(servers=1, seed=seed, faults="drop_answer=0.5", durations={"reset": 0})
        out = []
        for _ in range(30):
            try:
                out.append(api.action(50_000_001, "reset").status_code != 201)
            except requests.ConnectionError:
                out.append(True)
        assert [e["dropped"] for e in _log(api)] == out
        assert len(api.ctl("GET", "/actions").json()["actions"]) == 30
        return out

    first = pattern(11)
    assert first == pattern(11)
    assert 5 < sum(first) < 25


def test_a_dropped_answer_is_not_held_back_first(make_cloud) -> None:
    api = make_cloud(servers=1, faults="slow=1@5,drop_answer=1")
    began = time.monotonic()
    _dropped(api, 50_000_001, timeout=(5, 30))
    assert time.monotonic() - began < 3  # no slow die after a drop: the connection closes at once
    assert api.ctl("GET", "/stats").json()["injected_faults"] == {"drop_answer": 1}


def test_reset_disarms_drop_answer_next_unless_it_arms_it(api: Api) -> None:
    api.ctl("PUT", "/config", json={"drop_answer_next": 2})
    assert api.ctl("POST", "/reset").json()["config"]["drop_answer_next"] == 0
    assert api.ctl("POST", "/reset", json={"drop_answer_next": 1}).json()["config"]["drop_answer_next"] == 1
    _dropped(api, api.running_server())


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_bad_drop_answer_next_is_refused_and_changes_nothing(api: Api, bad: Any) -> None:
    api.ctl("PUT", "/config", json={"drop_answer_next": 1})
    response = api.ctl("PUT", "/config", data=json.dumps({"drop_answer_next": bad, "speed": 9}), timeout=10)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["name"] == "drop_answer_next"
    assert (_config(api)["drop_answer_next"], _config(api)["speed"]) == (1, 1.0)

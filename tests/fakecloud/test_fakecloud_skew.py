"""Clock skew: the API's clock runs ahead of or behind the client's; only the times ``/v1`` reports move."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api


def _ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def _date(response: Any) -> float:
    return parsedate_to_datetime(response.headers["Date"]).timestamp()


def _created(api: Api, server_id: int) -> dict[str, float]:
    return {
        "server": _ts(api.server(server_id)["created"]),
        "image": _ts(api.get("/images").json()["images"][0]["created"]),
        "ssh_key": _ts(api.get("/ssh_keys").json()["ssh_keys"][0]["created"]),
    }


def test_no_skew_by_default(api: Api) -> None:
    start = api.fc.backend.clock.now()  # the manual clock's fixed start
    assert api.ctl("GET", "/config").json()["skew"] == 0.0
    assert _date(api.get("/servers")) == start


def test_skew_shifts_every_reported_time(api: Api) -> None:
    start = api.fc.backend.clock.now()  # the manual clock's fixed start
    server_id, other = api.ids(status="running")[:2]
    true_created = _created(api, server_id)
    assert api.ctl("PUT", "/config", json={"skew": -30}).json()["skew"] == -30.0

    assert _created(api, server_id) == {k: v - 30 for k, v in true_created.items()}
    posted = api.action(server_id, "reset")
    action = posted.json()["action"]
    assert _ts(action["started"]) == start - 30 and action["finished"] is None
    assert posted.headers["Date"] == formatdate(start - 30, usegmt=True)
    # Reset and Date come from the same skewed clock, so their difference is still the wait for a full bucket.
    missing = 3600 - int(posted.headers["RateLimit-Remaining"])
    assert int(posted.headers["RateLimit-Reset"]) - _date(posted) == missing
    image = api.action(other, "create_image").json()["image"]
    assert image["description"].endswith(f"-{int(start) - 30}")

    api.advance(4)
    done = api.action_status(action["id"])
    assert (done["status"], _ts(done["started"]), _ts(done["finished"])) == (
        "success",
        start - 30,
        start - 26,
    )

    # The controls keep the true time: they are the yardstick a test measures the client against.
    config = api.ctl("GET", "/config").json()
    assert (config["now"], config["skew"]) == (start + 4, -30.0)
    mine = [a for a in api.ctl("GET", "/actions").json()["actions"] if a["id"] == action["id"]]
    assert (mine[0]["started_at"], mine[0]["finished_at"]) == (start, start + 4)
    assert api.ctl("GET", "/requests").json()["requests"][0]["time"] == start


def test_changing_the_skew_moves_no_action_and_no_token(api: Api) -> None:
    start = api.fc.backend.clock.now()  # the manual clock's fixed start
    server_id = api.running_server()
    action = api.action(server_id, "reset").json()["action"]  # 4 s
    remaining = int(api.get("/servers").headers["RateLimit-Remaining"])
    api.ctl("PUT", "/config", json={"skew": 3600})
    now = api.action_status(action["id"])
    assert (now["status"], now["progress"], _ts(now["started"])) == ("running", 0, start + 3600)
    response = api.get("/servers")
    assert int(response.headers["RateLimit-Remaining"]) == remaining - 2  # no refill for an hour "passed"
    assert _date(response) == start + 3600
    api.advance(3.9)
    assert api.action_status(action["id"])["status"] == "running"
    api.advance(0.1)
    assert api.action_status(action["id"])["status"] == "success"


def test_start_takes_a_skew_and_reset_keeps_it(make_cloud) -> None:
    api = make_cloud(servers=2, skew=45)
    start = api.fc.backend.clock.now()  # the manual clock's fixed start
    assert _date(api.get("/servers")) == start + 45
    assert api.ctl("POST", "/reset", json={"servers": 1}).json()["config"]["skew"] == 45.0
    assert _date(api.get("/servers")) == start + 45
    assert api.ctl("POST", "/reset", json={"skew": 0}).json()["config"]["skew"] == 0.0
    assert _date(api.get("/servers")) == start


def test_a_fractional_skew_rounds_like_a_clock(api: Api) -> None:
    start = api.fc.backend.clock.now()  # the manual clock's fixed start
    api.ctl("PUT", "/config", json={"skew": -0.5})
    response = api.get("/servers")
    # The API's clock reads start - 0.5: its whole second is start - 1 in Date and in RFC 3339 alike.
    assert _date(response) == start - 1
    assert _ts(api.action(api.running_server(), "reset").json()["action"]["started"]) == start - 1
    # One token spent: full again at start + 1, which the skewed clock reads as start + 0.5, rounded up.
    assert int(response.headers["RateLimit-Reset"]) == start + 1


@pytest.mark.parametrize("bad", ["30", True, 10**9, float("nan")])
def test_bad_skew_is_refused_and_changes_nothing(api: Api, bad: Any) -> None:
    api.ctl("PUT", "/config", json={"skew": 5})
    # json.dumps writes NaN as the bare token NaN, which Python's json (and so fakecloud) reads back.
    response = api.ctl("PUT", "/config", data=json.dumps({"skew": bad, "speed": 9}))
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["name"] == "skew"
    config = api.ctl("GET", "/config").json()
    assert (config["skew"], config["speed"]) == (5.0, 1.0)


def test_a_bad_skew_at_start_is_refused() -> None:
    import fakecloud

    with pytest.raises(ValueError, match="seconds within"):
        fakecloud.start(servers=1, skew=float("inf"))

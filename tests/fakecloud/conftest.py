"""Fixtures for the fakecloud tests: a fresh simulator per test, driven over real HTTP with requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

import fakecloud
from fakecloud import ManualClock

TOKEN = "test-token"
START = 1_800_000_000.0  # a fixed manual-clock start keeps timestamps predictable


class Api:
    """A plain requests client for one fakecloud: paths are relative to ``/v1`` or ``/_fakecloud``."""

    def __init__(self, fc: fakecloud.FakeCloud, token: str | None = TOKEN) -> None:
        self.fc = fc
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, timeout: Any = 10, **kw: Any) -> requests.Response:
        return self.session.request(method, self.fc.base_url + path, timeout=timeout, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def action(self, server_id: int, name: str, **kw: Any) -> requests.Response:
        return self.post(f"/servers/{server_id}/actions/{name}", **kw)

    def server(self, server_id: int) -> dict[str, Any]:
        response = self.get(f"/servers/{server_id}")
        assert response.status_code == 200, response.text
        return response.json()["server"]

    def action_status(self, action_id: int) -> dict[str, Any]:
        response = self.get(f"/actions/{action_id}")
        assert response.status_code == 200, response.text
        return response.json()["action"]

    # ----- controls -----
    def ctl(self, method: str, path: str, timeout: float = 10, **kw: Any) -> requests.Response:
        return requests.request(method, self.fc.control_url + path, timeout=timeout, **kw)

    def advance(self, seconds: float) -> None:
        response = self.ctl("POST", "/clock/advance", json={"seconds": seconds})
        assert response.status_code == 200, response.text

    def patch_server(self, server_id: int, **body: Any) -> dict[str, Any]:
        response = self.ctl("PATCH", f"/servers/{server_id}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def ids(self, **filters: Any) -> list[int]:
        response = self.get("/servers", params={"per_page": 50, **filters})
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["servers"]]

    def running_server(self) -> int:
        return self.ids(status="running")[0]

    def off_server(self) -> int:
        return self.ids(status="off")[0]


@pytest.fixture
def fc() -> Iterator[fakecloud.FakeCloud]:
    """A fakecloud on a manual clock with 12 seeded servers and no faults."""
    cloud = fakecloud.start(servers=12, token=TOKEN, seed=1, clock=ManualClock(START))
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture
def api(fc: fakecloud.FakeCloud) -> Iterator[Api]:
    client = Api(fc)
    yield client
    client.session.close()


@pytest.fixture
def make_cloud() -> Iterator[Any]:
    """Start fakeclouds with custom options; all are stopped at the end of the test."""
    clouds: list[fakecloud.FakeCloud] = []

    def make(**kw: Any) -> Api:
        kw.setdefault("token", TOKEN)
        kw.setdefault("clock", ManualClock(START))
        cloud = fakecloud.start(**kw)
        clouds.append(cloud)
        return Api(cloud)

    yield make
    for cloud in clouds:
        cloud.stop()

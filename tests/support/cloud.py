"""The test's own eyes and hands on fakecloud: the public API as a plain client, and the test controls."""

from __future__ import annotations

from typing import Any

import requests

TOKEN = "test-token-5f2c9a"


class Control:
    """fakecloud's test controls (outside /v1) over HTTP."""

    def __init__(self, control_url: str) -> None:
        self.url = control_url.rstrip("/")
        self.http = requests.Session()

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(self.url + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def send(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.url + path, json=body, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def requests_log(self) -> list[dict[str, Any]]:
        return list(self.get("/requests", since=0)["requests"])

    def posts(self, server_id: int | None = None, command: str | None = None) -> list[dict[str, Any]]:
        """Return the successful action POSTs in the request log, optionally of one server and command."""
        return [
            r
            for r in self.requests_log()
            if r["method"] == "POST"
            and r["status"] == 201
            and (server_id is None or r["server_id"] == server_id)
            and (command is None or r["route"].endswith("/" + command))
        ]


class Api:
    """A plain requests client of the public API, as a test's own eyes on fakecloud's state."""

    def __init__(self, base_url: str, token: str = TOKEN) -> None:
        self.url = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(self.url + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=10)

    def server(self, server_id: int) -> dict[str, Any]:
        return dict(self.get(f"/servers/{server_id}")["server"])

    def server_ids(self) -> list[int]:
        ids: list[int] = []
        page: int | None = 1
        while page:
            body = self.get("/servers", page=page, per_page=50)
            ids += [s["id"] for s in body["servers"]]
            page = body["meta"]["pagination"]["next_page"]
        return ids


def drain(base_url: str, leave: int, token: str = TOKEN) -> int:
    """Spend the project's budget down to about ``leave`` requests, as another tool on the project would;
    return what the API says is left."""
    import concurrent.futures as cf

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def remaining() -> int:
        return int(session.get(base_url + "/servers/0", timeout=10).headers["RateLimit-Remaining"])

    left = remaining()
    with cf.ThreadPoolExecutor(8) as pool:
        while left > leave + 60:
            left = min(pool.map(lambda _: remaining(), range(min(400, left - leave))))
    while left > leave:
        left = remaining()
    return left

"""A scripted stand-in for the API behind ``HcloudClient``'s one seam, for fault tables in process.

It keeps just enough of the API's rules to be honest about them — action ids only grow, one running action
per server (423 ``locked`` otherwise), POST answers carrying ``root_password``/``image`` — and fails each
request as its script says: before the API processed it, or after (the action exists, the answer is lost).
``processed`` counts the action POSTs the API acted on: the number a test asserts never exceeds one.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NewConnectionError, ProtocolError

from workers.server_actions import ACTIONS

BASE = "http://api.test/v1"
_BY_PATH = {a.path: a for a in ACTIONS.values()}

# Faults, by when they strike:
#   before processing: "refused", "connect_timeout", "502_before", "503", "409", "429", "504_before",
#                      "protected" (refused for good)
#   after processing (the action exists): "reset", "read_timeout", "502_after", "504_after", "crash",
#                      "unlisted" (a read timeout, and the next list of the server's actions misses it)


class Crash(BaseException):
    """Stands for the worker process dying mid-request (nothing below catches a BaseException)."""


def _response(status: int, body: Any, *, html: bool = False) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body if html else json.dumps(body).encode()
    r.headers["Content-Type"] = "text/html" if html else "application/json"
    r.reason = "error" if status >= 400 else "OK"
    return r


def _error(status: int, code: str, message: str = "error") -> requests.Response:
    return _response(status, {"error": {"code": code, "message": message, "details": None}})


@dataclass
class ScriptedAPI:
    """A ``requests.Session`` look-alike: ``script`` holds faults for the next action POSTs, in order."""

    next_id: int = 1000
    actions: list[dict[str, Any]] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    get_script: deque[str] = field(default_factory=deque)
    processed: list[dict[str, Any]] = field(default_factory=list)
    requests_seen: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    hidden: set[int] = field(default_factory=set)

    def add_action(self, server_id: int, command: str, status: str = "success") -> dict[str, Any]:
        """Put an action on a server as another tool would have (ids keep growing)."""
        self.next_id += 1
        action = {
            "id": self.next_id,
            "command": command,
            "status": status,
            "progress": 100 if status != "running" else 0,
            "started": "2026-11-30T12:00:00Z",
            "finished": None if status == "running" else "2026-11-30T12:00:01Z",
            "resources": [{"id": server_id, "type": "server"}],
            "error": None,
        }
        self.actions.append(action)
        return action

    def finish_all(self) -> None:
        for a in self.actions:
            a.update(status="success", progress=100, finished="2026-11-30T12:00:02Z")

    # -- the Session interface the client uses ---------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url)
        path = parts.path.removeprefix("/v1")
        self.requests_seen.append((method, path))
        params = kwargs.get("params") or []
        if method == "POST":
            fault = self.script.popleft() if self.script else None
            return self._post(path, fault)
        fault = self.get_script.popleft() if self.get_script else None
        if fault == "reset":
            raise requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104)))
        return self._get(path, list(params))

    def _post(self, path: str, fault: str | None) -> requests.Response:
        if fault == "crash_before":  # the process dies after noting its bound, before the POST leaves
            raise Crash()
        if fault == "refused":
            raise requests.ConnectionError(NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
        if fault == "connect_timeout":
            raise requests.ConnectTimeout("connect timed out")
        before = {
            "502_before": _response(502, b"<html>502</html>", html=True),
            "504_before": _error(504, "timeout"),
        }
        before |= {"503": _error(503, "unavailable"), "409": _error(409, "conflict")}
        before |= {"429": _error(429, "rate_limit_exceeded"), "protected": _error(423, "protected")}
        if fault in before:
            return before[fault]
        _, _, server, _, name = path.split("/")
        server_id = int(server)
        if any(a["status"] == "running" and a["resources"][0]["id"] == server_id for a in self.actions):
            return _error(423, "locked", "there is already an Action running")
        action = self.add_action(server_id, _BY_PATH[name].command, status="running")
        self.processed.append(action)
        body: dict[str, Any] = {"action": action}
        if _BY_PATH[name].secret:
            body["root_password"] = f"pw-{action['id']}"
        if _BY_PATH[name].makes_image:
            body["image"] = {"id": 9000 + len(self.processed), "description": None, "type": "snapshot"}
        if fault == "reset":
            raise requests.ConnectionError(
                ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
            )
        if fault == "unlisted":
            self.hidden.add(action["id"])
        if fault in ("read_timeout", "unlisted"):
            raise requests.ReadTimeout("read timed out")
        if fault == "502_after":
            return _response(502, b"<html>502</html>", html=True)
        if fault == "504_after":
            return _error(504, "timeout")
        if fault == "crash":
            raise Crash()
        return _response(201, body)

    def _get(self, path: str, params: list[tuple[str, Any]]) -> requests.Response:
        query: dict[str, list[Any]] = {}
        for k, v in params:
            query.setdefault(k, []).append(v)
        if path.startswith("/actions/"):
            aid = int(path.rsplit("/", 1)[1])
            found = [a for a in self.actions if a["id"] == aid]
            return _response(200, {"action": found[0]}) if found else _error(404, "not_found")
        if path == "/actions":
            ids = {int(i) for i in query.get("id", [])}
            return _response(200, {"actions": [a for a in self.actions if a["id"] in ids]})
        if path.startswith("/servers/") and path.endswith("/actions"):
            server_id = int(path.split("/")[2])
            mine = [a for a in self.actions if a["resources"][0]["id"] == server_id]
            if "status" not in query:
                mine = [a for a in mine if a["id"] not in self.hidden]
                self.hidden.clear()  # committed by the next look
            if "status" in query:
                mine = [a for a in mine if a["status"] in query["status"]]
            mine.sort(key=lambda a: a["id"], reverse=True)
            per_page = int(query.get("per_page", [50])[0])
            meta = {"pagination": {"page": 1, "per_page": per_page, "next_page": None}}
            return _response(200, {"actions": mine[:per_page], "meta": meta})
        if path == "/images":
            meta = {"pagination": {"page": 1, "per_page": 50, "next_page": None}}
            return _response(200, {"images": [], "meta": meta})
        return _error(404, "not_found")

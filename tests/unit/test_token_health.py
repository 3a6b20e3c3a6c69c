"""Token marks on a real Redis with a stepped clock: what each answer notes, what it costs, who wins."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.client import HcloudClient
from workers.errors import APIError
from workers.projects import Project
from workers.retry_policy import RetryPolicy
from workers.runtime import build_engine
from workers.token_health import ACCEPTED, KEEP, REFRESH, REJECTED, TokenHealth, read_mark, token_key

from ..support.processes import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Answers(requests.Session):
    """Answers every request with the next status of a list (a JSON error body for 4xx)."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__()
        self.statuses = list(statuses)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        status = self.statuses.pop(0)
        resp = requests.Response()
        resp.status_code = status
        body = {"servers": []} if status < 400 else {"error": {"code": "unauthorized", "message": "no"}}
        resp._content = json.dumps(body).encode()
        return resp


@pytest.fixture()
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    """A project name of the test's own, so no test reads another's mark."""
    return "p" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


def test_the_key_names_the_project_and_a_hash_never_the_token() -> None:
    key = token_key("prod", "secret-token-value")
    assert key.startswith("hf:token:prod:") and "secret-token-value" not in key
    assert token_key("prod", "a") != token_key("prod", "b") != token_key("staging", "a")


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([401], REJECTED),
        ([200], ACCEPTED),
        ([201, 401], REJECTED),
        ([401, 200], ACCEPTED),  # a success after a rejection clears it at once, whatever the refresh
        ([401, 404, 422, 423, 429, 500, 503], REJECTED),  # they say nothing about the token
        ([404, 409, 422, 429, 502], None),
    ],
)
def test_what_each_answer_notes(
    client: redis.Redis, name: str, statuses: list[int], expected: str | None
) -> None:
    clock = Clock()
    health = TokenHealth(client, name, "tok", clock=clock)
    for status in statuses:
        clock.now += 1
        health.note("GET", "/servers", status)
    mark = health.mark()
    assert (mark.state if mark else None) == expected
    if mark is not None:
        assert mark == read_mark(client, name, "tok")
        assert mark.request == "GET /servers" and mark.status in statuses


def test_successes_are_written_once_a_refresh_and_rejections_every_time(
    client: redis.Redis, name: str
) -> None:
    clock = Clock()
    health = TokenHealth(client, name, "tok", clock=clock)
    health.note("GET", "/servers", 200)
    first = health.mark()
    assert first is not None and first.at == clock.now
    for _ in range(50):  # a busy worker: no write until the refresh is due
        clock.now += REFRESH / 100
        health.note("GET", "/actions", 200)
    assert health.mark() == first
    clock.now = first.at + REFRESH
    health.note("GET", "/actions", 200)
    again = health.mark()
    assert again is not None and again.at == clock.now and again.request == "GET /actions"
    clock.now += 1
    health.note("POST", "/servers/1/actions/poweron", 401)
    clock.now += 1
    health.note("GET", "/servers", 401)
    rejected = health.mark()
    assert rejected is not None and rejected.state == REJECTED and rejected.at == clock.now
    assert 0 < client.ttl(health.key) <= KEEP


def test_a_rejection_noted_elsewhere_is_cleared_by_a_later_success_within_a_refresh(
    client: redis.Redis, name: str
) -> None:
    """Two processes with one token: one is told 401, the other then succeeds (a transient refusal)."""
    clock = Clock()
    here, there = TokenHealth(client, name, "tok", clock=clock), TokenHealth(client, name, "tok", clock=clock)
    here.note("GET", "/servers", 200)
    clock.now += 1
    there.note("GET", "/servers", 401)
    clock.now += 1
    here.note("GET", "/servers", 200)  # this process wrote "accepted" a second ago: not again yet
    assert here.mark() is not None and here.mark().state == REJECTED  # type: ignore[union-attr]
    clock.now += REFRESH
    here.note("GET", "/servers", 200)
    assert here.mark() is not None and here.mark().state == ACCEPTED  # type: ignore[union-attr]


def test_the_later_answer_wins_whatever_order_they_are_written_in(client: redis.Redis, name: str) -> None:
    early, late = Clock(), Clock()
    late.now += 5
    TokenHealth(client, name, "tok", clock=late).note("GET", "/servers", 401)
    TokenHealth(client, name, "tok", clock=early).note("GET", "/servers", 200)  # answered before, noted after
    mark = read_mark(client, name, "tok")
    assert mark is not None and mark.state == REJECTED and mark.at == late.now


def test_a_new_token_of_the_project_starts_with_no_mark(client: redis.Redis, name: str) -> None:
    """A rotation: the revoked token stays rejected, the new one is judged by its own answers."""
    TokenHealth(client, name, "old-token").note("GET", "/servers", 401)
    assert read_mark(client, name, "new-token") is None
    TokenHealth(client, name, "new-token").note("GET", "/servers", 200)
    assert read_mark(client, name, "new-token").state == ACCEPTED  # type: ignore[union-attr]
    assert read_mark(client, name, "old-token").state == REJECTED  # type: ignore[union-attr]
    assert not [k for k in client.scan_iter(f"hf:token:{name}:*") if b"token" in k.split(b":", 3)[-1]]


def test_noting_never_fails_the_request_when_redis_is_away(name: str) -> None:
    from ..support.processes import free_port

    away = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    health = TokenHealth(away, name, "tok")
    health.note("GET", "/servers", 401)
    health.note("GET", "/servers", 200)
    with pytest.raises(redis.ConnectionError):
        health.mark()


def test_the_client_hook_notes_every_answer_retries_included(client: redis.Redis, name: str) -> None:
    """The contract with HcloudClient's on_response: (method, path, status) of each answer."""
    health = TokenHealth(client, name, "tok")
    api = HcloudClient(
        "tok",
        base_url="http://api.test/v1",
        session=Answers([200, 401]),
        on_response=health.note,
        policy=RetryPolicy(attempts=2, base=0.01, cap=0.01, max_total=1.0),
    )
    api.request("GET", "/servers")
    assert health.mark().state == ACCEPTED  # type: ignore[union-attr]
    with pytest.raises(APIError) as refused:
        api.request("GET", "/servers")
    assert refused.value.status == 401
    mark = health.mark()
    assert mark is not None and mark.state == REJECTED and mark.request == "GET /servers"


def test_an_engine_notes_a_rejected_token_where_the_healthcheck_reads_it(
    redis_server: RedisServer, name: str
) -> None:
    project = Project(name, "http://api.test/v1", "engine-token")
    engine = build_engine({"retry_base": 0.01}, redis_url=redis_server.url, project=project, secret_key=None)
    engine.client.session = Answers([401])
    with pytest.raises(APIError):
        engine.client.request("GET", "/servers")
    mark = read_mark(redis_server.client(), name, "engine-token")
    assert mark is not None and mark.state == REJECTED

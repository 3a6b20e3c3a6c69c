"""Shared fixtures: a private redis-server for the session, fakecloud instances, and an end-of-suite audit.

Every fakecloud started here is remembered, so the secrets audit (run last) can ask each one for the
root passwords it handed out and look for them in Redis and in every captured log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.audit import audit, secrets_of
from .support.cloud import TOKEN
from .support.processes import RedisServer

# The test processes themselves never reach for the default Redis (127.0.0.1:6379, which may be someone
# else's): a command run in-process and not pointed at a test's own server finds nothing there, and says so.
# A unit test of a refusal that stopped refusing once sent a message into that Redis.
os.environ["HCLOUD_FLOW_REDIS_URL"] = "redis://127.0.0.1:1/0"

STARTED_CLOUDS: list[Any] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Long modules first (xdist hands files out in this order, so neither process is left with one at the
    # end); the audit reads what every other test left behind, so it runs after all of them.
    items.sort(
        key=lambda item: (
            item.get_closest_marker("audit") is not None,
            item.get_closest_marker("long") is None,
        )
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit: runs after every other test and inspects what they left")


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


# Every Redis server a test started, kept running until the session ends so the audit can read it.
STARTED_REDIS: list[RedisServer] = []


@pytest.fixture(scope="session")
def _redis_servers() -> Iterator[list[RedisServer]]:
    yield STARTED_REDIS
    for server in STARTED_REDIS:
        server.stop()


def new_redis(tmp_path_factory: pytest.TempPathFactory, name: str) -> RedisServer:
    """Start a Redis server of the caller's own (no other module or test shares it) and remember it."""
    server = RedisServer(tmp_path_factory.mktemp(f"redis-{name}"))
    STARTED_REDIS.append(server)
    return server


@pytest.fixture(scope="module")
def redis_server(
    _redis_servers: list[RedisServer],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> RedisServer:
    """Each test module's own Redis: isolated by construction, so no module cleans up after another (their
    fakeclouds reuse server ids, and a stale step message would act on the next module's servers)."""
    return new_redis(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module", autouse=True)
def _no_secret_left_behind(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """After each module: no API token and no root password in plaintext in the Redis servers it started or
    in any log captured so far. Per module, so it holds however the modules are spread over processes."""
    redis_before, clouds_before = len(STARTED_REDIS), len(STARTED_CLOUDS)
    yield
    mine, clouds = STARTED_REDIS[redis_before:], STARTED_CLOUDS[clouds_before:]
    if not mine and not clouds:
        return
    found = audit(secrets_of(TOKEN, STARTED_CLOUDS), mine, tmp_path_factory.getbasetemp())
    assert not found, f"plaintext secrets after {request.module.__name__}: {found}"


def start_cloud(**kwargs: Any) -> Any:
    """Start fakecloud in this process with the test token, and remember it for the audit."""
    import fakecloud

    kwargs.setdefault("token", TOKEN)
    cloud = fakecloud.start(**kwargs)
    STARTED_CLOUDS.append(cloud)
    return cloud

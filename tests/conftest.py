"""Shared fixtures: a private redis-server for the session, fakecloud instances, and an end-of-suite audit.

Every fakecloud started here is remembered, so the secrets audit (run last) can ask each one for the
root passwords it handed out and look for them in Redis and in every captured log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import TOKEN, RedisServer

STARTED_CLOUDS: list[Any] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The audit reads what every other test left behind, so it runs after all of them.
    items.sort(key=lambda item: item.get_closest_marker("audit") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit: runs after every other test and inspects what they left")


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def start_cloud(**kwargs: Any) -> Any:
    """Start fakecloud in this process with the test token, and remember it for the audit."""
    import fakecloud

    kwargs.setdefault("token", TOKEN)
    cloud = fakecloud.start(**kwargs)
    STARTED_CLOUDS.append(cloud)
    return cloud

"""Chaos fixtures: each scenario kills workers, monitors or Redis mid-flight and leaves messages behind, so
each test gets a Redis of its own (the next scenario's fakecloud reuses the same server ids)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from ..conftest import new_redis, start_cloud
from ..support.processes import RedisServer, client_app


@pytest.fixture()
def redis_server(
    _redis_servers: list[RedisServer],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> RedisServer:
    return new_redis(tmp_path_factory, re.sub(r"\W", "_", request.node.name)[:40])


@pytest.fixture()
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=45, speed=20.0, seed=61)
    yield c
    c.stop()


@pytest.fixture()
def app(redis_server: RedisServer) -> Iterator[Celery]:
    a = client_app(redis_server.url)
    yield a
    a.close()

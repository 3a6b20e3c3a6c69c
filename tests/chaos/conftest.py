"""Chaos fixtures: each scenario kills workers, monitors or Redis mid-flight and leaves messages behind, so
each test gets a Redis of its own (the next scenario's fakecloud reuses the same server ids)."""

from __future__ import annotations

import re

import pytest

from ..conftest import new_redis
from ..support.processes import RedisServer


@pytest.fixture()
def redis_server(
    _redis_servers: list[RedisServer],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> RedisServer:
    return new_redis(tmp_path_factory, re.sub(r"\W", "_", request.node.name)[:40])

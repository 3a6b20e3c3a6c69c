"""Integration fixtures: fakecloud over HTTP, real celery workers, a Celery client app for sending."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from ..conftest import start_cloud
from ..support.cloud import Control
from ..support.processes import RedisServer, Worker, client_app, worker_env


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    # Speed 20: a 20 s create_image takes 1 s; the rate budget refills 20 requests a second.
    c = start_cloud(servers=40, speed=20.0, seed=3)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def control(cloud: Any) -> Control:
    return Control(cloud.control_url)


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, cloud: Any) -> dict[str, str]:
    return worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20")


@pytest.fixture(scope="module")
def worker(env: dict[str, str], logdir: Path, request: pytest.FixtureRequest) -> Iterator[Worker]:
    w = Worker(request.module.__name__.rsplit(".", 1)[-1], env, logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def celery_client(redis_server: RedisServer) -> Iterator[Celery]:
    app = client_app(redis_server.url)
    yield app
    app.close()

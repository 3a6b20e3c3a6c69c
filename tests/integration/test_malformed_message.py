"""Malformed messages on the broker: the worker logs them, sets them aside and goes on serving the queue.

Each test pushes bad entries straight onto the queue list in Redis, as an outside tester did with
``LPUSH hcloud_flow '{garbage'`` (which used to end the worker with "Unrecoverable error: JSONDecodeError"),
then sends a real task behind them: it runs only if the worker took every bad entry and survived. The module
runs its own redis-server, so it can read the unacked hash and the dead-letter list as they are.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

import celeryconfig
from workers import broker_transport
from workers.broker_transport import DEADLETTER_KEY

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import RedisServer, Worker, client_app, wait_until, worker_env

pytestmark = pytest.mark.integration

QUEUE = "hcloud_flow"


def envelope(body: Any, content_type: str = "application/json", **headers: Any) -> bytes:
    """Return a kombu envelope of a Celery task message (protocol 2) as it lies on the queue list."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    task_headers = {"lang": "py", "task": "hcloud_flow.status", "id": str(uuid.uuid4()), "retries": 0}
    task_headers.update(headers)
    return json.dumps(
        {
            "body": base64.b64encode(raw).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {k: v for k, v in task_headers.items() if v is not None},
            "properties": {
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def reshaped(entry: bytes, **fields: Any) -> bytes:
    """Return an envelope with some of its top-level fields replaced."""
    return json.dumps({**json.loads(entry), **fields}).encode()


ARGS = [[1], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]

# Entries kombu or Celery could not take: before the fix, each one stopped the worker or came back forever.
MALFORMED = {
    "not JSON": b"{garbage",
    "not UTF-8": b"\xff\xfe\x00",
    "a JSON list": b"[1,2,3]",
    "an empty object": b"{}",
    "a JSON string": b'"x"',
    "a body and nothing else": b'{"body": 5}',
    "no delivery tag": b'{"body": "", "properties": {}}',
    "no delivery info": b'{"body": "", "properties": {"delivery_tag": "t1"}}',
    "a body that is not base64": json.dumps(
        {
            "body": "abc",  # incorrect padding
            "properties": {
                "delivery_tag": "t2",
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
            },
        }
    ).encode(),
    "headers that are a list": reshaped(envelope(ARGS), headers=[1]),
    "a task without an id": envelope(ARGS, id=None),
    "a task body that is a number": envelope(5),
    "a task body of three numbers": envelope([1, 2, 3]),
    "a time limit that is a number": envelope(ARGS, timelimit=5),
    "stamps that are a number": envelope(ARGS, stamps=5, stamped_headers=5),
    "a large payload": b"{" + b"x" * 200_000,
    "JSON nested too deeply": b"[" * 3000 + b"]" * 3000,
    "a task body nested too deeply": envelope(b"[" * 3000 + b"]" * 3000),
}

# Envelopes Celery refuses itself: it logs them and acknowledges them (nothing to set aside).
REFUSED_BY_CELERY = {
    "Can't decode message body": envelope(b"{garbage"),
    "Refusing to deserialize untrusted content": envelope(
        b"\x80\x04K\x01.", "application/x-python-serialize"
    ),
    "Received unregistered task of type 'no.such.task'": envelope(ARGS, task="no.such.task"),
}


def canonical(entry: bytes) -> Any:
    """Return an entry as JSON values where it is JSON (the consumer guard stores its re-encoding)."""
    try:
        return json.loads(entry)
    except (ValueError, RecursionError):
        return entry


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-malformed"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(own_redis: RedisServer) -> redis.Redis:
    return own_redis.client()


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=4, speed=20.0, seed=47)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(own_redis: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    w = Worker("malformed", worker_env(own_redis.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20"), logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def celery_client(own_redis: RedisServer) -> Iterator[Celery]:
    app = client_app(own_redis.url)
    yield app
    app.close()


@pytest.fixture(scope="module")
def server_ids(cloud: Any) -> Iterator[int]:
    return iter(Api(cloud.base_url).server_ids())


def power_on(app: Celery, control: Control, worker: Worker, sid: int) -> dict[str, Any]:
    """Run a real task behind whatever is on the queue, and return its result."""
    control.send("PATCH", f"/servers/{sid}", {"status": "off", "acpi": True})
    pending = app.send_task("hcloud_flow.power_on", args=[sid])
    wait_until(lambda: pending.ready() or not alive(worker), 60, "the task behind the bad messages to end")
    assert alive(worker), f"the worker died:\n{worker.log.read_text()[-3000:]}"
    return dict(pending.get(timeout=10))


def alive(worker: Worker) -> bool:
    return worker.proc is not None and worker.proc.poll() is None


def still_serving(worker: Worker, broker: redis.Redis) -> None:
    assert alive(worker), f"the worker died:\n{worker.log.read_text()[-3000:]}"
    wait_until(lambda: broker.hlen("unacked") == 0, 30, "every delivered message to be acknowledged")
    assert broker.llen(QUEUE) == 0


def log_since(worker: Worker, mark: int) -> str:
    return worker.log.read_bytes()[mark:].decode(errors="replace")


def test_the_configured_transport_is_ours() -> None:
    assert celeryconfig.broker_transport == broker_transport.NAME


def test_malformed_entries_are_set_aside_and_the_worker_serves_on(
    worker: Worker, broker: redis.Redis, celery_client: Celery, control: Control, server_ids: Iterator[int]
) -> None:
    mark = len(worker.log.read_bytes())
    for entry in MALFORMED.values():
        broker.lpush(QUEUE, entry)

    result = power_on(celery_client, control, worker, next(server_ids))

    assert result["status"] == "success"
    still_serving(worker, broker)
    # Newest first, each entry as it was pushed (the large one whole), in the order they were taken.
    aside = broker.lrange(DEADLETTER_KEY, 0, len(MALFORMED) - 1)
    assert [canonical(e) for e in reversed(aside)] == [canonical(e) for e in MALFORMED.values()]
    logged = [
        line for line in log_since(worker, mark).splitlines() if "Malformed message on hcloud_flow" in line
    ]
    assert len(logged) == len(MALFORMED), "one line per entry"
    assert all(len(line) < 800 for line in logged), "an excerpt, never the payload"


def test_envelopes_celery_refuses_are_logged_and_acknowledged(
    worker: Worker, broker: redis.Redis, celery_client: Celery, control: Control, server_ids: Iterator[int]
) -> None:
    mark = len(worker.log.read_bytes())
    aside_before = broker.llen(DEADLETTER_KEY)
    for entry in REFUSED_BY_CELERY.values():
        broker.lpush(QUEUE, entry)

    result = power_on(celery_client, control, worker, next(server_ids))

    assert result["status"] == "success"
    still_serving(worker, broker)
    log = log_since(worker, mark)
    assert [said for said in REFUSED_BY_CELERY if said not in log] == []
    assert broker.llen(DEADLETTER_KEY) == aside_before, "Celery's own refusals are not set aside"


def test_a_malformed_broadcast_does_not_stop_the_worker(
    worker: Worker, broker: redis.Redis, celery_client: Celery
) -> None:
    # Remote control commands reach every worker by pub/sub on this channel (kombu's fanout prefix, db 0).
    for entry in (b"{garbage", b"[1,2,3]", b'{"properties": {}}', b"[" * 3000 + b"]" * 3000):
        broker.publish("/0.celery.pidbox", entry)

    replies = celery_client.control.ping(timeout=5, limit=1)

    assert any(worker.name in name for reply in replies for name in reply), replies
    still_serving(worker, broker)


def test_the_dead_letter_list_is_capped(own_redis: RedisServer) -> None:
    # The transport on its own, in this process, on a database the worker does not use.
    url = own_redis.url.rsplit("/", 1)[0] + "/1"
    options = {"deadletter_key": "hf:test:deadletter", "deadletter_keep": 3}
    queue = Queue("capped", Exchange("capped"), "capped")
    plain = redis.Redis.from_url(url)
    received: list[Any] = []

    def take(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    conn = Connection(url, transport=broker_transport.Transport, transport_options=options)
    with conn, conn.Consumer(queue, callbacks=[take]):
        for n in range(5):
            plain.lpush("capped", f"{{garbage {n}")
        conn.Producer().publish({"ok": True}, exchange=queue.exchange, routing_key="capped")

        def drained() -> list[Any]:
            with suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
            return received

        wait_until(drained, 10, "the valid message", interval=0)

    assert received == [{"ok": True}]
    assert plain.lrange("hf:test:deadletter", 0, -1) == [
        b"{garbage 4",
        b"{garbage 3",
        b"{garbage 2",
    ]


def test_broadcasts_read_with_malformed_ones_are_delivered_at_once(own_redis: RedisServer) -> None:
    # The transport on its own: a fanout queue, and bad broadcasts published ahead of a good one while the
    # consumer is not reading, so that one read of its socket takes them all.
    url = own_redis.url.rsplit("/", 1)[0] + "/2"
    fanout = Exchange("fan", type="fanout")
    queue = Queue("fan-q", fanout, auto_delete=True)
    plain = redis.Redis.from_url(url)
    received: list[Any] = []

    conn = Connection(url, transport=broker_transport.Transport)
    with conn, conn.Consumer(queue, callbacks=[lambda body, message: received.append(body)]):
        with suppress(TimeoutError):
            conn.drain_events(timeout=0.3)  # subscribes
        # kombu subscribes by PSUBSCRIBE; the module's worker has subscriptions of its own, on database 0.
        wait_until(
            lambda: any(c["db"] == "2" and c["psub"] != "0" for c in plain.client_list()),
            10,
            "the subscription",
        )
        for entry in (b"{garbage", b"[" * 3000 + b"]" * 3000, b"{garbage again"):
            plain.publish("/2.fan", entry)
        conn.Producer().publish({"ok": True}, exchange=fanout, routing_key="")

        # One wait: the good broadcast came in the same read as the bad ones, and nothing else will come.
        with suppress(TimeoutError):
            conn.drain_events(timeout=3)

    assert received == [{"ok": True}]

"""The broker channel hands kombu one Redis client for its publishes, events and acknowledgements.

kombu built a new ``redis.Redis`` for each (a tenth of submitting a run). Shared, it must still deliver
what many threads publish at once, and follow the channel to a new connection pool.
"""

from __future__ import annotations

import concurrent.futures as cf
from contextlib import suppress
from typing import Any

from kombu import Connection, Exchange, Queue

from workers import broker_transport

from ..support.processes import RedisServer, wait_until


def test_one_client_carries_every_publish_from_many_threads(redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/2"  # a database nothing else here uses
    queue = Queue("shared-client", Exchange("shared-client"), "shared-client")
    received: list[Any] = []

    def take(body: Any, message: Any) -> None:
        received.append(body["n"])
        message.ack()

    with Connection(url, transport=broker_transport.Transport) as conn:
        channel = conn.default_channel
        clients = set()

        def publish(n: int) -> None:
            with channel.conn_or_acquire() as client:
                clients.add(id(client))
            conn.Producer(channel).publish({"n": n}, exchange=queue.exchange, routing_key="shared-client")

        with conn.Consumer(queue, callbacks=[take]):
            with cf.ThreadPoolExecutor(8) as pool:
                list(pool.map(publish, range(200)))

            def drained() -> bool:
                with suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)
                return len(received) == 200

            wait_until(drained, 20, "every message published", interval=0)
        assert sorted(received) == list(range(200))
        assert len(clients) == 1  # one client object served them all

        first = channel._shared
        assert first is not None and first.connection_pool is channel.pool
        channel._disconnect_pools()  # as kombu does after a fork or a lost connection
        with channel.conn_or_acquire() as client:
            assert client is not first and client.connection_pool is channel.pool
            assert client.ping()
        with channel.conn_or_acquire(client="given") as given:
            assert given == "given"  # a caller's own client is used as it is

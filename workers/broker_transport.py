"""The Redis broker transport, made to survive a malformed message on a queue list.

kombu's Redis transport (checked on 5.7.0) pops a queue entry with BRPOP, decodes it in
``Channel._brpop_read`` (``loads(...)``) and builds a ``Message`` from it in the consumer callback; then
Celery reads the task headers and body. None of these steps expects to fail: one entry that is not JSON
(``{garbage``), JSON that is not a kombu envelope (``[1,2,3]``, ``{}``), or an envelope Celery's consumer
trips over (a task body of ``5``, a ``timelimit`` of ``5``, no task ``id``) raises out of the worker's event
loop. The worker exits ("Unrecoverable error"), or restarts its consumer, which puts the message back on the
queue to fail again.

Two guards, each moving a bad message to a capped dead-letter list (``hf:deadletter``, newest first) after
one log line with a short excerpt; the list holds the entry as it was popped, or the envelope re-encoded:

* kombu reads the BRPOP reply through redis-py's response callback for BRPOP, before it decodes anything.
  Ours checks the popped entry (``malformed``) and, for a bad one, answers "nothing popped" as a BRPOP
  timeout does.
* A consumer that acknowledges its messages is wrapped: if it raises anything but a broker error, the message
  is set aside and rejected instead of the error stopping the worker.

A valid message is passed on untouched and takes kombu's own path: the same decode, the same unacked hash,
the same visibility timeout and at-least-once delivery. A body Celery cannot decode or a task it does not
know Celery handles itself: it logs the message and acknowledges it.

The channel also hands kombu one Redis client for its publishes, events and acknowledgements, instead of a new
one each time, and keeps it to put unacknowledged messages back when Celery closes a lost connection (see
``Channel.conn_or_acquire``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from queue import Empty
from typing import Any

import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

__all__ = ["DEADLETTER_KEEP", "DEADLETTER_KEY", "NAME", "Channel", "Transport", "bad_envelope", "malformed"]

log = logging.getLogger(__name__)

DEADLETTER_KEY = "hf:deadletter"
DEADLETTER_KEEP = 1000
# Enough of a message to recognise it in the log; the message itself is in the dead-letter list.
EXCERPT = 120

# Redis and network failures: the consumer reconnects and the message is restored, as without the guard.
# kombu counts KeyError as one too (a stale poller entry); raised by a consumer, it means a missing field.
_BROKER_ERRORS = tuple(
    e
    for e in (*kombu_redis.Transport.connection_errors, *kombu_redis.Transport.channel_errors)
    if e is not KeyError
)


def malformed(channel: kombu_redis.Channel, item: bytes) -> str | None:
    """Return why a popped queue entry is not a message the worker can take, or None if it is one."""
    try:
        payload = loads(bytes_to_str(item))
    except (TypeError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return f"not JSON ({exc})"
    except RecursionError:  # ``[[[[…`` a few thousand deep: json gives up on the stack
        return "JSON nested too deeply"
    return bad_envelope(channel, payload)


def bad_envelope(channel: kombu_redis.Channel, payload: Any) -> str | None:
    """Return why a decoded message is not one the worker can take, or None if it is one."""
    if not isinstance(payload, dict):
        return f"JSON {type(payload).__name__}, not a message envelope"
    try:
        # What the consumer callback builds next; it reads the properties and decodes the body.
        message = channel.Message(payload, channel=channel)
    except Exception as exc:
        return f"not a message envelope ({type(exc).__name__}: {exc})"
    # What the unacked hash needs to record the message and to restore it after a worker died.
    delivery = message.delivery_info
    if not isinstance(message.delivery_tag, str):
        return "no delivery tag"
    if not (
        isinstance(delivery, dict)
        and isinstance(delivery.get("exchange"), str)
        and isinstance(delivery.get("routing_key"), str)
    ):
        return "no delivery exchange and routing key"
    return _bad_task(message)


def _bad_task(message: Any) -> str | None:
    """Return what a Celery task message (protocol 2) lacks that the worker unpacks after it was accepted.

    Without these, the task never runs and never fails: its thread dies quietly and the message comes back
    after every visibility timeout. What the consumer refuses itself (an unknown task, an undecodable body)
    is left to it.
    """
    if "task" not in message.headers:
        return None
    if not isinstance(message.headers.get("id"), str):
        return "a task message without a task id"
    if message.content_type != "application/json":
        return None
    try:
        body = json.loads(message.body)
    except ValueError:
        return None
    except RecursionError:
        return "a task body nested too deeply"
    if not (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict)
    ):
        return "a task message whose body is not [args, kwargs, options]"
    return None


class Channel(kombu_redis.Channel):
    """A Redis channel that moves malformed messages aside instead of failing the worker."""

    deadletter_key = DEADLETTER_KEY
    deadletter_keep = DEADLETTER_KEEP
    # A longer tuple than kombu's: its inferred fixed-length tuple type cannot say so.
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "deadletter_key",
        "deadletter_keep",
    )

    _shared: Any = None  # the client conn_or_acquire hands out, on the channel's current pool

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu's, but one client object, reused: kombu builds a new ``redis.Redis`` for every publish, event
        and acknowledgement, about half a millisecond of CPU each (a tenth of submitting a run). A client is a
        handle on the pool, which gives each command its own connection, so threads may share it; a new pool
        (kombu makes one after a fork or a reconnect) gets a new client."""
        if client:
            yield client
            return
        if self._pool is None and self.connection.client is None:
            # Celery lost the broker connection, had kombu drop it, and now closes this channel, which puts
            # its unacknowledged messages back: a new pool would need the connection's address, gone with it
            # (kombu's own client failed there with an AttributeError that stopped the worker). The last
            # client still has its pool, which reconnects on demand. Without one, or with Redis still away,
            # the messages come back after the visibility timeout, as they would from a dead worker.
            if self._shared is None:
                raise redis.exceptions.ConnectionError("the broker connection is closed")
            yield self._shared
            return
        pool = self.pool
        shared = self._shared
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared = self._create_client()
        yield shared

    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous)
        if asynchronous:  # the client kombu runs BRPOP on
            client.set_response_callback("BRPOP", self._checked_brpop_reply)
        return client

    def _checked_brpop_reply(self, response: Any, **_: Any) -> tuple[bytes, bytes] | None:
        """Return the BRPOP reply as redis-py does, or None (nothing popped) once a bad entry is set aside."""
        if not response:
            return None
        queue, item = response
        reason = malformed(self, item)
        if reason is None:
            return queue, item
        self._set_aside(bytes_to_str(queue).rsplit(self.sep, 1)[0], item, reason)
        return None

    def _receive_one(self, c: Any) -> Any:
        # A broadcast kombu decodes itself: one nested a few thousand deep raised out of the event loop.
        # kombu raises Empty for one that is not JSON; past the first message of a read, that Empty leaves
        # kombu's read loop (_receive) and the broadcasts read with it wait in the client's buffer until
        # another arrives: a ping sent right after garbage went unanswered. Nothing delivered is False.
        try:
            return super()._receive_one(c)
        except RecursionError:
            log.error("Malformed broadcast dropped: JSON nested too deeply")
            return False
        except Empty:
            return False

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        # Broadcasts (remote control, events) arrive by pub/sub; kombu skips those that are not JSON itself.
        reason = bad_envelope(self, message)
        if reason is None:
            return bool(super()._deliver_fanout_message(message, exchange))
        self._set_aside(exchange, dumps(message), reason)
        return False

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Callable[[Any], Any], *args: Any, **kw: Any
    ) -> Any:
        if no_ack:  # events and control replies: never in the unacked hash, never restored
            return super().basic_consume(queue, no_ack, callback, *args, **kw)

        def guarded(message: Any) -> Any:
            try:
                return callback(message)
            except _BROKER_ERRORS:
                raise
            except Exception as exc:
                reason = f"the consumer failed ({type(exc).__name__}: {exc})"
                self._set_aside(queue, dumps(message._raw), reason)
                if not message.acknowledged:
                    message.reject(requeue=False)
                return None

        return super().basic_consume(queue, no_ack, guarded, *args, **kw)

    def _set_aside(self, queue: str, item: bytes | str, reason: str) -> None:
        """Log a bad message in one line and push it onto the capped dead-letter list."""
        raw = item.encode() if isinstance(item, str) else item
        log.error(
            "Malformed message on %s, moved to %s: %s; %d bytes: %r%s",
            queue,
            self.deadletter_key,
            reason[:200],
            len(raw),
            raw[:EXCERPT],
            "..." if len(raw) > EXCERPT else "",
        )
        # A plain client on the channel's pool: the dead-letter key is ours, never under kombu's key prefix.
        with redis.Redis(connection_pool=self.pool).pipeline() as pipe:
            pipe.lpush(self.deadletter_key, raw)
            pipe.ltrim(self.deadletter_key, 0, self.deadletter_keep - 1)
            pipe.execute()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above; celeryconfig names it in ``broker_transport``."""

    Channel = Channel


# The name celeryconfig gives ``broker_transport``. kombu shows a connection's URL with the transport's name
# as its scheme; mapped back to "redis", logs and Flower (which picks its broker client by scheme) see redis://.
NAME = f"{__name__}:{Transport.__name__}"
Connection.resolve_aliases.setdefault(NAME, "redis")

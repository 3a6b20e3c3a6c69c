"""Contract: the monitor finishes a parked step exactly as Celery's worker finishes a step that returns.

No worker process and no broker server: messages go through kombu's in-memory transport, results into Celery's
in-memory cache backend. Each case sends a canvas, takes the step's message off the queue and runs that same
message twice as a worker's pool runs it (``Request`` then ``trace_task_ret``): once the step returns and
Celery's tracer sends what follows; once the step parks (keeps ``request_fields``, raises ``Ignore``) and
``CeleryDispatcher`` sends what follows from the request as it comes back from JSON. The messages read back
from the queue must be equal header for header, property for property and body for body, and so must what
the backend stored. The sets of header, property, body and request keys are pinned: a Celery or kombu upgrade
that adds, drops or renames one fails here, not in production.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery._state import get_current_task
from celery.app.task import Context
from celery.app.trace import trace_task_ret
from celery.contrib.testing.app import setup_default_app
from celery.exceptions import Ignore
from celery.worker.request import Request
from kombu.message import Message

from workers.continuation import CeleryDispatcher, check_continuable, request_fields
from workers.errors import ActionFailed, BadInput, HcloudFlowError

# What a task message carries (Celery's protocol 2 and kombu's virtual transport, checked on 5.7.0).
HEADER_KEYS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    }
)
PROPERTY_KEYS = frozenset(
    {
        "correlation_id",
        "reply_to",
        "delivery_mode",
        "delivery_info",
        "priority",
        "body_encoding",
        "delivery_tag",
    }
)
EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
# What a worker's task request holds, so what a parked step keeps: the headers, the embed, and what the
# worker adds from the delivery.
REQUEST_KEYS = (HEADER_KEYS | EMBED_KEYS) | {
    "args",
    "kwargs",
    "properties",
    "delivery_info",
    "reply_to",
    "correlation_id",
    "hostname",
    "is_eager",
    "called_directly",
    "headers",
    "time_limit",
    "soft_time_limit",
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Sent:
    """One message as it sits on the queue."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    delivery_info: dict[str, Any]
    body: bytes
    content_type: str
    content_encoding: str

    @classmethod
    def of(cls, message: Message) -> Sent:
        return cls(
            message.headers,
            message.properties,
            message.delivery_info,
            message.body,
            message.content_type,
            message.content_encoding,
        )

    def message(self) -> Message:
        """Return a fresh copy to deliver (a worker's Request changes what it is given)."""
        return Message(
            body=self.body,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            delivery_info=deepcopy(self.delivery_info),
            properties=deepcopy(self.properties),
            headers=deepcopy(self.headers),
        )

    @property
    def embed(self) -> dict[str, Any]:
        return dict(json.loads(self.body)[2])

    def view(self) -> dict[str, Any]:
        """Return everything that can be compared: all of it but the per-publish delivery tag."""
        properties = {k: v for k, v in self.properties.items() if k != "delivery_tag"}
        return {
            "headers": self.headers,
            "properties": properties,
            "delivery_info": self.delivery_info,
            "body": json.loads(self.body),
            "content": [self.content_type, self.content_encoding],
        }

    def essentials(self) -> dict[str, Any]:
        """Return the fields the brief names, so a failure shows them first."""
        args, kwargs, embed = json.loads(self.body)
        return {
            "task": self.headers["task"],
            "args": args,
            "kwargs": kwargs,
            "chain": [sig["task"] for sig in embed["chain"] or []],
            "root_id": self.headers["root_id"],
            "parent_id": self.headers["parent_id"],
            "priority": self.properties["priority"],
        }


def normalized(value: Any, keep: str = "") -> Any:
    """Return ``value`` with every id not found in ``keep`` renamed by its order of appearance.

    Ids frozen into the canvas are the same on both paths and stay. Ids drawn when a message goes out (a link
    callback's, the group that carries several callbacks) differ on every send: they become <new-0>, <new-1>,
    ..., so both paths still have to use them in the same places.
    """
    fresh: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if found in keep else fresh.setdefault(found, f"<new-{len(fresh)}>")

    return json.loads(UUID.sub(rename, json.dumps(value)))


class Bench:
    """A Celery app on our settings, with an in-memory broker and backend, and a worker run in process."""

    def __init__(self, *, inherit_priority: bool = False) -> None:
        self.queue = f"contract-{uuid.uuid4().hex}"
        self.app = app = Celery(self.queue, set_as_current=False)
        # Our settings (serializers, result_extended, acks_late, time limits), on a broker and backend that
        # live in this process; the transport is named too, since celeryconfig names its own.
        app.config_from_object("celeryconfig")
        app.conf.update(
            broker_url="memory://",
            broker_transport="memory",
            result_backend="cache+memory://",
            task_default_queue=self.queue,
            task_inherit_parent_priority=inherit_priority,
        )
        with app.connection_for_write() as conn:
            assert conn.transport.driver_type == "memory"
        assert type(app.backend).__name__ == "CacheBackend"
        self.mode = "return"
        self.parked: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.inline_errbacks: list[tuple[str, str]] = []
        self.failure = ActionFailed(1, "one", 7, "server_error", "the action failed")
        self._define_tasks()

    def _define_tasks(self) -> None:
        bench, task = self, self.app.task

        @task(bind=True, name="contract.step", shared=False)
        def step(self: Any, target: Any, **options: Any) -> dict[str, Any]:
            check_continuable(self.request)
            result = {"server_id": target, "options": options, "run_id": options.get("run_id")}
            if bench.mode == "fail":
                raise bench.failure
            if bench.mode == "park":
                bench.parked.append((request_fields(self.request, self.name), result))
                raise Ignore()
            return result

        @task(name="contract.next", shared=False)
        def nxt(previous: Any, **options: Any) -> Any:
            return previous

        @task(name="contract.collect", shared=False)
        def collect(results: list[Any]) -> list[Any]:
            return results

        @task(name="contract.on_error", shared=False)
        def on_error(task_id: str) -> str:
            return task_id

        @task(name="contract.on_error_inline", shared=False)
        def on_error_inline(request: Any, exc: Exception, traceback: str) -> None:
            # Celery calls an errback that takes the request in process, where the failure is noticed; what
            # it sends there names the failed step as its parent.
            bench.inline_errbacks.append((request.id, type(exc).__name__))
            nxt.delay("sent by an errback")

        self.step, self.next, self.collect = step, nxt, collect
        self.on_error, self.on_error_inline = on_error, on_error_inline

    def drain(self) -> list[Sent]:
        """Return and remove every message on the queue, oldest first."""
        # Whatever ran before (a worker's tracer, the dispatcher) has left no task current in this thread.
        assert get_current_task() is None
        assert self.step.request_stack.top is None
        out = []
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            while (message := channel.basic_get(self.queue, no_ack=True)) is not None:
                out.append(Sent.of(message))
        return out

    def run(self, sent: Sent, mode: str) -> None:
        """Run a message as a worker's pool runs it, the step returning, parking or failing."""
        self.mode = mode
        request = Request(sent.message(), app=self.app)
        trace_task_ret(
            request.type,
            request.id,
            request.request_dict,
            request.body,
            request.content_type,
            request.content_encoding,
            app=self.app,
        )

    def park(self, sent: Sent) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the step so that it parks; return its request as the wait store returns it, and its result."""
        self.run(sent, "park")
        assert self.drain() == [], "a parked step sent something"
        fields, result = self.parked.pop()
        return json.loads(json.dumps(fields)), result

    def meta(self, task_id: str) -> dict[str, Any]:
        meta = dict(self.app.backend.get_task_meta(task_id, cache=False))
        meta.pop("date_done", None)
        if isinstance(meta["result"], BaseException):
            # The backend rebuilds a stored exception; two rebuilt ones compare by what they carry.
            exc = meta["result"]
            meta["result"] = {"exc_type": type(exc).__name__, "exc_args": list(exc.args)}
        return meta

    def forget(self, *task_ids: str) -> None:
        for task_id in task_ids:
            self.app.AsyncResult(task_id).forget()

    def close(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a connection: this contract needs no server, and must not reach a real one."""

    def refuse(sock: socket.socket, address: Any) -> None:
        raise AssertionError(f"the contract test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@contextmanager
def benched(inherit_priority: bool) -> Iterator[Bench]:
    b = Bench(inherit_priority=inherit_priority)
    # A worker makes its app the current and default one (celery.app.trace.setup_worker_optimizations), and
    # Celery resolves the members of a serialized group with it. Otherwise they would fall back to a default
    # app loaded from celeryconfig, with its Redis.
    with setup_default_app(b.app):
        b.app.set_default()
        b.app.set_current()
        yield b
        b.close()


@pytest.fixture(params=[False, True], ids=["own-priority", "inherit-priority"])
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    with benched(request.param) as b:
        yield b


@pytest.fixture
def plain_bench() -> Iterator[Bench]:
    with benched(False) as b:
        yield b


def linked(b: Bench, *callbacks: Any, errbacks: tuple[Any, ...] = ()) -> Any:
    first = b.step.s(1)
    for callback in callbacks:
        first.link(callback)
    for errback in errbacks:
        first.link_error(errback)
    return first


# Each shape: the canvas whose first message is the step, and the options it is sent with.
SHAPES: dict[str, Callable[[Bench], tuple[Any, dict[str, Any]]]] = {
    "alone": lambda b: (b.step.s(1), {}),
    "a-b-c": lambda b: (chain(b.step.s(1), b.next.s(), b.next.s()), {}),
    "kwargs": lambda b: (
        chain(b.step.s(1, run_id="r-1", deadline=60), b.next.s(step="two"), b.next.s(flag=True)),
        {},
    ),
    "message priority": lambda b: (chain(b.step.s(1), b.next.s(), b.next.s()), {"priority": 7}),
    "next step's own priority": lambda b: (
        chain(b.step.s(1), b.next.s().set(priority=3), b.next.s()),
        {"priority": 7},
    ),
    "one link": lambda b: (
        chain(linked(b, b.next.s(tag="cb"), errbacks=(b.on_error.s(),)), b.next.s()),
        {},
    ),
    "several links and a group": lambda b: (
        linked(b, b.next.s(tag="x"), b.next.s(tag="y"), group(b.next.s(), b.next.s())),
        {"priority": 4},
    ),
    "group after": lambda b: (chain(b.step.s(1), group(b.next.s(), b.next.s(tag="g"))), {}),
    "chord after": lambda b: (chain(b.step.s(1), group(b.next.s(), b.next.s()), b.collect.s()), {}),
    "chord after, then a step": lambda b: (
        chain(b.step.s(1), chord([b.next.s(), b.next.s()], b.collect.s()), b.next.s()),
        {"priority": 5},
    ),
    "linked chord": lambda b: (linked(b, chord([b.next.s(), b.next.s()], b.collect.s())), {}),
}


def first_message(b: Bench, shape: str) -> Sent:
    canvas, options = SHAPES[shape](b)
    canvas.apply_async(**options)
    [sent] = b.drain()
    assert sent.headers["task"] == "contract.step"
    return sent


def check_keys(messages: list[Sent]) -> None:
    for sent in messages:
        assert set(sent.headers) == HEADER_KEYS, sent.headers["task"]
        # A message that expires also carries its time to live for the broker.
        expiring = {"expiration"} if sent.headers["expires"] else set()
        assert set(sent.properties) == PROPERTY_KEYS | expiring, sent.headers["task"]
        assert set(sent.embed) == EMBED_KEYS, sent.headers["task"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_succeed_sends_what_celery_sends(bench: Bench, shape: str) -> None:
    first = first_message(bench, shape)
    step_id = first.headers["id"]

    bench.run(first, "return")
    by_celery = bench.drain()
    stored_by_celery = bench.meta(step_id)
    bench.forget(step_id)

    fields, result = bench.park(first)
    assert bench.meta(step_id)["status"] != "SUCCESS"
    CeleryDispatcher(bench.app).succeed(fields, result)
    by_us = bench.drain()
    stored_by_us = bench.meta(step_id)

    check_keys([first, *by_celery, *by_us])
    keep = json.dumps(first.view())
    assert normalized([m.essentials() for m in by_us], keep) == normalized(
        [m.essentials() for m in by_celery], keep
    )
    ours = normalized([[m.view() for m in by_us], stored_by_us], keep)
    celery = normalized([[m.view() for m in by_celery], stored_by_celery], keep)
    assert ours == celery
    assert stored_by_us["status"] == "SUCCESS"
    assert stored_by_us["result"] == result


# What each shape sends once the step succeeds: the tasks; the priority of the first message sent, when the
# step's own message had priority 7 (own: without task_inherit_parent_priority; inherited: with it); and how
# many children the step's result names (a group, or a chord's header group, is one child).
SENDS = {
    "alone": ([], None, None, 0),
    "a-b-c": (["contract.next"], 0, 0, 1),
    "message priority": (["contract.next"], 0, 7, 1),
    # The inherited priority is an apply_async option, and options override the signature's own.
    "next step's own priority": (["contract.next"], 3, 7, 1),
    "one link": (["contract.next", "contract.next"], 0, 0, 2),
    "several links and a group": (["contract.next"] * 4, 0, 4, 2),
    "group after": (["contract.next", "contract.next"], 0, 0, 1),
    "chord after": (["contract.next", "contract.next"], 0, 0, 1),
}


@pytest.mark.parametrize("shape", list(SENDS))
def test_shapes_send_what_they_should(bench: Bench, shape: str) -> None:
    """The comparison above is not vacuous: each shape sends its next steps, the result first."""
    tasks, own, inherited, children = SENDS[shape]
    first = first_message(bench, shape)
    fields, result = bench.park(first)
    CeleryDispatcher(bench.app).succeed(fields, result)
    sent = bench.drain()
    assert [m.headers["task"] for m in sent] == tasks
    assert all(json.loads(m.body)[0] == [result] for m in sent)
    assert all(m.headers["parent_id"] == first.headers["id"] for m in sent)
    assert all(m.headers["root_id"] == first.headers["root_id"] for m in sent)
    if sent:
        inherit = bench.app.conf.task_inherit_parent_priority
        assert sent[0].properties["priority"] == (inherited if inherit else own)
    assert len(bench.meta(first.headers["id"])["children"] or []) == children


@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_step_that_completes_a_chord(plain_bench: Bench, outcome: str) -> None:
    """A parked step, last part of a chord's header, ends the chord as the worker would."""
    b = plain_bench
    paths = []
    for mode in ("celery", "dispatcher"):
        body = b.collect.s().on_error(b.on_error.s())
        chord([b.step.s(1, run_id="r"), b.next.s(2)], body).apply_async()
        step_msg, other = b.drain()
        b.run(other, "return")
        if mode == "celery":
            b.run(step_msg, "return" if outcome == "succeed" else "fail")
        else:
            fields, result = b.park(step_msg)
            if outcome == "succeed":
                CeleryDispatcher(b.app).succeed(fields, result)
            else:
                CeleryDispatcher(b.app).fail(fields, b.failure, None)
        sent = b.drain()
        # The body's run (or, on failure, its errback's) is what the chord sends.
        expected = "contract.collect" if outcome == "succeed" else "contract.on_error"
        assert [m.headers["task"] for m in sent] == [expected]
        body_id = step_msg.embed["chord"]["options"]["task_id"]
        stored = [b.meta(step_msg.headers["id"]), b.meta(body_id)]
        for meta in stored:
            meta.pop("traceback", None)
        paths.append(normalized([step_msg.view(), other.view(), [m.view() for m in sent], stored]))
    assert paths[0] == paths[1]


FAIL_SHAPES = ["a-b-c", "chord after, then a step", "errbacks"]


@pytest.mark.parametrize("shape", FAIL_SHAPES)
def test_fail_stores_what_celery_stores(plain_bench: Bench, shape: str) -> None:
    b = plain_bench
    if shape == "errbacks":
        canvas = chain(
            linked(b, b.next.s(), errbacks=(b.on_error.s(), b.on_error_inline.s())), b.next.s(), b.next.s()
        )
        canvas.apply_async()
        [first] = b.drain()
    else:
        first = first_message(b, shape)
    step_id = first.headers["id"]
    # Every id that a failure of the step must reach: the step and each later step of its chain.
    later = [sig["options"]["task_id"] for sig in first.embed["chain"]]
    ids = [step_id, *later]

    b.run(first, "fail")
    by_celery = b.drain()
    stored_by_celery = [b.meta(i) for i in ids]
    inline_by_celery = list(b.inline_errbacks)
    b.forget(*ids)
    b.inline_errbacks.clear()

    fields, _ = b.park(first)
    CeleryDispatcher(b.app).fail(fields, b.failure, None)
    by_us = b.drain()
    stored_by_us = [b.meta(i) for i in ids]

    check_keys([*by_celery, *by_us])
    assert [m["status"] for m in stored_by_us] == ["FAILURE"] * len(ids)
    assert stored_by_us[0]["result"]["exc_type"] == "ActionFailed"
    # The tracer stores the whole stack; the monitor has only the exception, which ends that stack.
    for ours, theirs in zip(stored_by_us, stored_by_celery, strict=True):
        assert theirs["traceback"].endswith(ours.pop("traceback"))
        theirs.pop("traceback")
    keep = json.dumps(first.view())
    assert normalized([[m.view() for m in by_us], stored_by_us], keep) == normalized(
        [[m.view() for m in by_celery], stored_by_celery], keep
    )
    assert b.inline_errbacks == inline_by_celery
    if shape == "errbacks":
        assert [m.headers["task"] for m in by_us] == ["contract.next", "contract.on_error"]
        assert by_us[0].headers["parent_id"] == step_id
        assert b.inline_errbacks == [(step_id, "ActionFailed")]


def test_resend_sends_the_same_message_again(plain_bench: Bench) -> None:
    b = plain_bench
    canvas = chain(linked(b, b.next.s(tag="cb"), errbacks=(b.on_error.s(),)), b.next.s().set(priority=2))
    canvas.apply_async(priority=7, expires=3600)
    [first] = b.drain()
    fields, _ = b.park(first)
    CeleryDispatcher(b.app).resend(fields)
    [again] = b.drain()
    assert again.essentials() == first.essentials()
    before, after = first.view(), again.view()
    # The expiry is a moment, so the time to live the broker gets is what is left of it.
    assert 0 < int(after["properties"].pop("expiration")) <= int(before["properties"].pop("expiration"))
    # Task.retry's path passes the request's origin on as a publish option too, so kombu adds it as a
    # property; the header, which is what Celery reads, is the original's.
    assert after["properties"].pop("origin") == first.headers["origin"]
    assert after == before


def test_request_fields_keep_the_whole_request(plain_bench: Bench) -> None:
    b = plain_bench
    b.step.apply_async((1,), {"run_id": "r"}, priority=7)
    [first] = b.drain()
    fields, _ = b.park(first)
    assert set(fields) == REQUEST_KEYS
    assert fields["task"] == "contract.step"
    assert fields["delivery_info"]["priority"] == 7
    assert fields["properties"]["priority"] == 7
    assert fields["kwargs"] == {"run_id": "r"}


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def step_succeeded(self, run_id: str, task_id: str, result: dict[str, Any], last: bool) -> None:
        self.calls.append(("succeeded", run_id, task_id, last))

    def step_failed(self, run_id: str, task_id: str, exc: BaseException) -> None:
        self.calls.append(("failed", run_id, task_id, type(exc).__name__))


@pytest.mark.parametrize(("shape", "last"), [("alone", True), ("kwargs", False)])
def test_run_hooks(plain_bench: Bench, shape: str, last: bool) -> None:
    b = plain_bench
    hooks = Hooks()
    dispatcher = CeleryDispatcher(b.app, hooks)  # type: ignore[arg-type]
    first = first_message(b, shape)
    fields, result = b.park(first)
    dispatcher.succeed(fields, {**result, "run_id": "r-1"})
    dispatcher.fail(fields, HcloudFlowError("boom"), "r-2")
    dispatcher.fail(fields, HcloudFlowError("boom"), None)  # falls back to the step's run_id kwarg, if any
    step_id = first.headers["id"]
    expected = [("succeeded", "r-1", step_id, last), ("failed", "r-2", step_id, "HcloudFlowError")]
    if shape == "kwargs":
        expected.append(("failed", "r-1", step_id, "HcloudFlowError"))
    assert hooks.calls == expected
    b.drain()


def test_check_continuable_refuses_eager_and_direct_calls(plain_bench: Bench) -> None:
    b = plain_bench
    outcome = b.step.apply((1,))
    assert isinstance(outcome.result, BadInput)
    assert "delay()" in outcome.result.message
    with pytest.raises(BadInput):
        b.step(1)
    assert b.drain() == []


def test_check_continuable_refuses_what_json_cannot_keep() -> None:
    request = Context(id="x", task="t", args=[object()], kwargs={}, called_directly=False, is_eager=False)
    with pytest.raises(BadInput, match="not JSON"):
        check_continuable(request)
    check_continuable(Context(id="x", task="t", args=[1], kwargs={}, called_directly=False, is_eager=False))

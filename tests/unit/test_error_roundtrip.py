"""Errors keep what they say when Celery stores them (JSON) or a process passes them on (pickle)."""

from __future__ import annotations

import pickle

import pytest
from celery import Celery

from workers.errors import AcpiIgnored, Unsettled, WaitTimeout


@pytest.mark.parametrize(
    "exc",
    [
        WaitTimeout(5, "rebuild", 88, "action 88 to finish", 5.0, True),
        WaitTimeout(5, "shutdown", 87, "the off state", 60.0),
        AcpiIgnored(5, "shutdown", 87, "the off state", 60.0),
    ],
)
def test_a_wait_timeout_comes_back_whole(exc: WaitTimeout) -> None:
    """A flag added to WaitTimeout's arguments once broke AcpiIgnored's unpickling (it took one fewer)."""
    backend = Celery("roundtrip", broker="memory://", backend="cache+memory://", set_as_current=False).backend
    for back in (
        pickle.loads(pickle.dumps(exc)),  # noqa: S301 (our own bytes)
        backend.exception_to_python(backend.prepare_exception(exc)),
    ):
        assert type(back) is type(exc) and str(back) == str(exc)
        assert back.action_running == exc.action_running


def test_an_unsettled_server_comes_back_with_its_status() -> None:
    """A reviewer: through Celery's JSON results the status came back as "server", the field it names."""
    exc = Unsettled("server 5 is starting: wait until it is running or off", "starting")
    backend = Celery("roundtrip", broker="memory://", backend="cache+memory://", set_as_current=False).backend
    for back in (
        pickle.loads(pickle.dumps(exc)),  # noqa: S301 (our own bytes)
        backend.exception_to_python(backend.prepare_exception(exc)),
    ):
        assert type(back) is Unsettled and str(back) == str(exc)
        assert (back.status, back.field, back.message) == ("starting", "server", exc.message)

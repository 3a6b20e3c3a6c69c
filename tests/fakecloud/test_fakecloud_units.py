"""Pure units: label rules and selectors, the clock, the transition table, the public surface."""

from __future__ import annotations

import inspect

import pytest

import fakecloud
from fakecloud import ManualClock, RealClock, responses, urls
from fakecloud.exceptions import FakeCloudError, InvalidInput
from fakecloud.labels import compile_selector, label_key_problem, label_value_problem, validate_labels
from fakecloud.transitions import FINISHED, TRANSITIONS


def test_public_surface_is_pinned() -> None:
    assert sorted(fakecloud.__all__) == sorted(
        [
            "FINISHED",
            "TRANSITIONS",
            "Backend",
            "Clock",
            "FakeCloud",
            "FaultSpec",
            "ManualClock",
            "RealClock",
            "Transition",
            "parse_faults",
            "start",
        ]
    )
    params = inspect.signature(fakecloud.start).parameters
    assert list(params) == [
        "host",
        "port",
        "servers",
        "token",
        "seed",
        "speed",
        "rate_limit",
        "faults",
        "durations",
        "clock",
        "skew",
        "id_space",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())


def test_every_action_has_a_route_a_handler_and_a_transition() -> None:
    posts = {
        t.rsplit("/", 1)[1]: h for m, t, h in urls.V1_ROUTES if m == "POST" and t.startswith("/servers/")
    }
    assert set(posts) == set(TRANSITIONS)
    for handler in posts.values():
        assert getattr(responses, handler.__name__) is handler
    assert {"success", "error"} == FINISHED


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a notin (1,2)", {"a": "3"}, True),
        ("a notin (1,2)", {}, True),
        ("!a", {"a": ""}, False),
        ("a", {"a": ""}, True),
        ("example.com/team=ops,a in (x)", {"example.com/team": "ops", "a": "x"}, True),
        (" a = 1 , b ", {"a": "1", "b": "z"}, True),
    ],
)
def test_selector_semantics(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert compile_selector(selector)(labels) is expected


def test_label_rules() -> None:
    assert label_key_problem("env") is None
    assert label_key_problem("example.com/env") is None
    assert "reserved" in label_key_problem("hetzner.cloud/x")
    assert label_key_problem("a" * 64)
    assert label_key_problem("-x")
    assert label_value_problem("") is None
    assert label_value_problem("v" * 64)
    with pytest.raises(InvalidInput) as info:
        validate_labels({"ok": "fine", "bad key": "x"})
    assert info.value.details["fields"][0]["name"] == "labels"


def test_error_shape() -> None:
    error = InvalidInput.field("image", "is required")
    assert error.to_json() == {
        "error": {
            "code": "invalid_input",
            "message": "invalid input in field 'image': is required",
            "details": {"fields": [{"name": "image", "messages": ["is required"]}]},
        }
    }
    assert isinstance(error, FakeCloudError) and error.status == 422


def test_clocks() -> None:
    clock = ManualClock(100.0)
    assert clock.now() == 100.0
    assert clock.advance(2.5) == 102.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        RealClock(0)
    assert abs(RealClock(3).now() - ManualClock().now()) < 2

"""The fleet and window models: one definition of each field's rule, the same refusal on every entry point,
and a JSON schema for callers in other languages."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import BadInput
from workflows.specs import FleetSpec, WindowSpec, checked

FLEET = {"workflow": "reboot", "servers": [1, "srv-2"], "max_concurrency": "10%", "max_errors": 0}
WINDOW = {
    **FLEET,
    "name": "sunday",
    "cron": "0 3 * * SUN",
    "tz": "Europe/Berlin",
    "duration": "2h",
    "cutoff": "30m",
}


def test_a_good_fleet_is_cleaned() -> None:
    spec = checked(FleetSpec, {**FLEET, "servers": "1, srv-2,", "params": None})
    assert spec.servers == [1, "srv-2"]
    assert spec.max_concurrency == "10%" and spec.max_errors == "0" and spec.params == {}


def test_a_good_window_fills_defaults_and_seconds() -> None:
    w = checked(WindowSpec, {k: v for k, v in WINDOW.items() if k not in ("tz", "cutoff")})
    assert (w.tz, w.cutoff, w.duration, w.paused) == ("UTC", 0, 7200, False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workflow": "defrag"}, "unknown workflow"),
        ({"workflow": None}, "unknown workflow"),
        ({"servers": []}, "non-empty list"),
        ({"servers": [0]}, "server ids are positive"),
        ({"servers": [-5]}, "server ids are positive"),
        ({"servers": [" "]}, "give each server"),
        ({"servers": [True]}, "give each server"),
        ({"servers": list(range(1, 10_002))}, "at most 10000"),
        ({"servers": None}, "exactly one of selector or servers"),
        ({"selector": "env=x"}, "exactly one of selector or servers"),
        ({"servers": None, "selector": "env in ("}, "is not a term"),
        ({"servers": None, "selector": ""}, "empty"),
        ({"max_concurrency": "0"}, "max_concurrency"),
        ({"max_concurrency": "150%"}, "max_concurrency"),
        ({"max_errors": "-1"}, "max_errors"),
        ({"max_errors": True}, "max_errors"),
        ({"canary": -1}, "canary"),
        ({"canary": "2"}, "canary"),
        ({"params": {"grace": 5}}, "does not take grace"),
        ({"params": "grace=5"}, "params must be an object"),
        ({"bogus": 1}, "unknown fleet options bogus"),
    ],
)
def test_bad_fleets_are_refused_with_the_field_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        checked(FleetSpec, {**FLEET, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad Name"}, "window names"),
        ({"cron": None}, "cron is missing"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "-1 * * * *"}, "minute field"),
        ({"cron": "0 3 * * *\n"}, "ASCII fields separated by spaces"),
        ({"cron": "0\t3 * * *"}, "ASCII fields separated by spaces"),
        ({"cron": "0 \uff13 * * *"}, "ASCII fields separated by spaces"),
        ({"tz": "Atlantis/Capital"}, "unknown time zone"),
        ({"duration": "100d"}, "at most 7d"),
        ({"duration": "0"}, "longer than 0"),
        ({"duration": None}, "duration is missing"),
        ({"cutoff": "3h"}, "must be shorter than the duration"),
        ({"servers": [""]}, "give each server"),
        ({"surprise": True}, "unknown window fields surprise"),
    ],
)
def test_bad_windows_are_refused_with_the_field_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        checked(WindowSpec, {**WINDOW, **changes})


def test_not_an_object_is_refused() -> None:
    with pytest.raises(BadInput, match="expected an object"):
        checked(FleetSpec, ["reboot"])


def test_the_schema_says_what_each_field_takes() -> None:
    schema = FleetSpec.model_json_schema()
    assert set(schema["properties"]) == {
        "workflow", "selector", "servers", "params", "max_concurrency", "max_errors", "canary", "notify",
        "approve_before_start", "approve_after_canary", "approval_timeout", "block_on", "drain",
        "max_per_placement_group", "max_per_location", "health_check", "health_timeout", "health_settle",
        "project",
    }  # fmt: skip
    assert schema["required"] == ["workflow"] and schema["additionalProperties"] is False
    assert schema["properties"]["canary"]["minimum"] == 0
    window = WindowSpec.model_json_schema()
    assert {"name", "cron", "duration"} <= set(window["required"])

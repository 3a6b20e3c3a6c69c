"""Workflow parameters: one table, one model per workflow, its JSON schema, and the refusals it words."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import BadInput
from workflows.definitions import WORKFLOWS
from workflows.param_models import schema_for
from workflows.validate import check_params, workflow_named


def test_every_workflow_has_a_schema_naming_each_parameter_with_its_help() -> None:
    for wf in WORKFLOWS.values():
        schema = schema_for(wf.name)
        assert set(schema["properties"]) == {p.name for p in wf.params}, wf.name
        assert schema["additionalProperties"] is False
        assert set(schema.get("required", [])) == {p.name for p in wf.params if p.required}
        for p in wf.params:
            assert schema["properties"][p.name]["description"] == p.help


def test_the_schema_says_the_ranges_and_choices_the_checks_enforce() -> None:
    grace = schema_for("snapshot")["properties"]["grace"]["anyOf"]
    assert {"type": "integer", "minimum": 0, "maximum": 3600} in grace
    image_type = schema_for("snapshot")["properties"]["image_type"]["anyOf"][0]
    assert image_type["enum"] == ["snapshot", "backup"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"grace": "60"}, "grace must be an integer or a number, not str"),
        ({"grace": True}, "grace must be an integer or a number, not a boolean"),
        ({"grace": 3601}, "grace must be between 0 and 3600, not 3601"),
        ({"grace": -1}, "grace must be between 0 and 3600"),
        ({"grace": -5.0}, "grace must be between 0 and 3600"),
        ({"grace": float("nan")}, "grace must be between 0 and 3600, not nan"),
        ({"grace": float("inf")}, "grace must be"),
        ({"image_type": "full"}, "image_type must be one of snapshot, backup, not 'full'"),
        ({"labels": ["a"]}, "labels must be an object, not list"),
        ({"no_force": 1}, "no_force must be true or false, not int"),
        ({"nope": 1}, "snapshot does not take nope"),
    ],
)
def test_refusals_name_the_parameter_and_what_it_takes(params: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        check_params(workflow_named("snapshot"), params)


def test_accepted_parameters_come_back_with_their_defaults() -> None:
    clean = check_params(workflow_named("snapshot"), {"grace": 30, "labels": {"a": "b"}})
    assert clean["grace"] == 30 and clean["labels"] == {"a": "b"}
    assert clean["image_type"] == "snapshot" and clean["no_force"] is False

"""Each workflow's parameters as a pydantic model, generated from its parameter table.

One definition: ``workflows.definitions`` lists each parameter (type, default, choices, range, help); from
that table this builds the model that checks a request's types and ranges (``validate.check_params``, which
every entry point calls: the CLI, the Python API, ``send_task`` submissions, Flower) and the JSON schema that
``hcloud-flow workflows --json`` prints for callers in other languages.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

from .definitions import WORKFLOWS, Param, Workflow

__all__ = ["model_for", "schema_for"]

# Strict: "5" is not an integer and true is not 1, as the API would not take them either.
_STRICT: dict[type, Any] = {
    int: StrictInt,
    float: StrictFloat,
    str: StrictStr,
    bool: StrictBool,
    dict: dict[StrictStr, Any],
    list: list[Any],
}


def _annotation(param: Param) -> Any:
    if param.choices:
        kind: Any = Literal[param.choices]
    else:
        ranged = param.minimum is not None or param.maximum is not None
        kinds = param.kind if isinstance(param.kind, tuple) else (param.kind,)
        members = [
            # A range goes on each number type, where JSON Schema can say it (minimum, maximum).
            Annotated[_STRICT[k], Field(ge=param.minimum, le=param.maximum)]
            if ranged and k in (int, float)
            else _STRICT[k]
            for k in kinds
        ]
        kind = members[0]
        for other in members[1:]:
            kind = kind | other
    return kind if param.required else kind | None


def _field(param: Param) -> Any:
    default = ... if param.required else param.default
    return Field(default, description=param.help)


@cache
def model_for(workflow_name: str) -> type[BaseModel]:
    """Return the parameter model of the named workflow (built once per process)."""
    workflow: Workflow = WORKFLOWS[workflow_name]
    fields = {p.name: (_annotation(p), _field(p)) for p in workflow.params}
    name = "".join(part.capitalize() for part in workflow.name.split("-")) + "Params"
    return create_model(  # type: ignore[call-overload]
        name, __config__=ConfigDict(extra="forbid", strict=True), __doc__=workflow.summary, **fields
    )


def schema_for(workflow_name: str) -> dict[str, Any]:
    """Return the JSON schema of the named workflow's parameters."""
    return model_for(workflow_name).model_json_schema()

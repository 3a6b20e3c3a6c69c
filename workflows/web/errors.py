"""The web service's refusals: the one error shape, how request-shape errors are worded, and what the
OpenAPI document says about both (and about the bearer key and Idempotency-Key)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

__all__ = ["ERROR_RESPONSES", "ErrorBody", "describe_invalid", "openapi_with_security"]


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every refusal: what went wrong, in the CLI's words, and the field to fix when there is one."""

    error: ErrorDetail


ERROR_RESPONSES = {
    400: "bad input: the message says what to fix; nothing was started or stored",
    401: "no API key, or not a valid one (Authorization: Bearer KEY)",
    403: "a viewer key on a write",
    404: "no such run, job, window or path",
    409: "the server is busy with another run, a request with this Idempotency-Key is still answered, or "
    "the window was changed meanwhile (read it again)",
    413: "the body is over 256 KiB",
    422: "the body or a parameter has the wrong shape, or an Idempotency-Key came with another body",
    503: "no worker took the request (nothing was started), or Redis cannot be reached",
    504: "a worker took the request but did not answer in time: look before sending it again",
}

# pydantic names the member of a union it tried last in an error's location (``server.int``): not a field.
_TYPE_TAGS = {"int", "str", "bool", "float", "dict", "list", "none"}


def describe_invalid(errors: Sequence[Any]) -> tuple[int, str, str | None]:
    """Word FastAPI's request validation errors as ours: (status, message, field)."""
    if not errors:
        return 422, "the request is not valid", None
    first = errors[0]
    kind, loc = first.get("type", ""), [str(p) for p in first.get("loc", ())]
    if kind == "json_invalid":
        where = f" near byte {loc[1]}" if len(loc) > 1 else ""
        return (
            400,
            f"the body is not valid JSON{where}: {first.get('ctx', {}).get('error', first['msg'])}",
            None,
        )
    source = loc[0] if loc else ""
    field_parts = [p for p in loc[1:] if p not in _TYPE_TAGS and "[" not in p]
    field = ".".join(field_parts) or None
    if source == "body" and field is None:
        if kind == "missing":
            return 422, "the body is empty: send a JSON object (Content-Type: application/json)", None
        return 422, "the body must be a JSON object (Content-Type: application/json)", None
    message = f"{field}: {first['msg']}" if field else str(first["msg"])
    return 422, message, field


def openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the bearer key every path but /api/v1/health needs and Idempotency-Key."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "`hcloud-flow apikey add NAME --role ...`",
        }
    }
    schema["security"] = [{"apiKey": []}]
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "a retried request with the same key gets the first answer and starts nothing (24 h)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    for path, item in schema.get("paths", {}).items():
        if path == "/api/v1/health":
            for op in item.values():
                op["security"] = []
        for method, op in item.items():
            if method in ("post", "patch"):
                op.setdefault("parameters", []).append(idem)
            # FastAPI's own 422 shape is not what this service answers; ours is ErrorBody.
            if "422" in op.get("responses", {}):
                op["responses"]["422"] = {
                    "description": ERROR_RESPONSES[422],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
    schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    app.openapi_schema = schema
    return schema

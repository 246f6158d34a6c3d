"""What the server's OpenAPI document says: the JSON Schema of a run's ``inputs`` (from the
workflow's state types, exactly what ``coerce_inputs(json_values=True)`` accepts), the request
model, every response each route can send, and the links between operations (a created run is
fetched with ``GET /runs/{run_id}``)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..compile.plan import CompiledWorkflow
from ..config.types import type_adapter
from . import models

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000  # SQL databases take 64-bit offsets; no page is that far anyway

# A created run, fetched by its id (OpenAPI links: Schemathesis' stateful phase follows them).
RUN_LINKS = {
    "GetRun": {
        "operationId": "get_run",
        "parameters": {"run_id": "$response.body#/id"},
        "description": "The run record, by the id this response returned.",
    }
}


def _inline(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by X (our types never recurse)."""
    if depth > 50:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = copy.deepcopy(defs.get(ref.rsplit("/", 1)[1], {}))
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _inline({**target, **rest}, defs, depth + 1)
        return {k: _inline(v, defs, depth + 1) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs, depth + 1) for item in schema]
    return schema


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    return schema


def field_schema(compiled: CompiledWorkflow, name: str) -> dict[str, Any]:
    """The JSON Schema of one state field's value (validation mode, ``$defs`` inlined)."""
    try:
        schema = type_adapter(compiled.state_types[name]).json_schema(mode="validation")
    except Exception:  # noqa: BLE001 - documentation only
        return {}
    schema = _inline(schema, schema.get("$defs", {}))
    return dict(_untitled(schema))


def inputs_schema(compiled: CompiledWorkflow) -> dict[str, Any]:
    """The workflow's state fields as the JSON Schema of ``inputs``."""
    spec = compiled.workflow.spec
    properties: dict[str, Any] = {}
    for name, fdef in spec.state.fields.items():
        schema = field_schema(compiled, name)
        if fdef.description:
            schema["description"] = fdef.description
        if fdef.default is not None:
            schema["default"] = fdef.default
        properties[name] = schema
    required = [n for n, f in spec.state.fields.items() if f.required]
    out: dict[str, Any] = {"properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def example_body(compiled: CompiledWorkflow) -> dict[str, Any]:
    fields = compiled.workflow.spec.state.fields
    return {"inputs": {n: f"<{n}>" for n, f in fields.items() if f.required}, "tags": {}}


def request_model(compiled: CompiledWorkflow) -> type[BaseModel]:
    """``{"inputs": {...}, "tags": {...}}``; ``inputs`` is required when the workflow has
    required inputs (then ``{}`` is refused, as the schema says)."""
    spec = compiled.workflow.spec
    required = any(f.required for f in spec.state.fields.values())
    description = (
        "The run's inputs: state fields of the workflow, each a JSON value of the field's type "
        '(3 for an int, not "3").'
    )
    extra = inputs_schema(compiled)
    inputs_field: Any = (
        Field(description=description, json_schema_extra=extra)
        if required
        else Field(default_factory=dict, description=description, json_schema_extra=extra)
    )
    model: type[BaseModel] = create_model(
        "RunRequest",
        __config__=ConfigDict(
            extra="forbid", json_schema_extra={"examples": [example_body(compiled)]}
        ),
        inputs=(dict[str, Any], inputs_field),
        tags=(
            dict[str, str],
            Field(
                default_factory=dict,
                description="Kept with the run record and added to its trace "
                "(user and team are queryable in reports).",
            ),
        ),
    )
    return model


def error_responses(*, keyed: bool, validated: bool) -> dict[int | str, dict[str, Any]]:
    """The error responses any route can send (401 only with an API key; 422 only for routes
    with parameters or a body)."""
    out: dict[int | str, dict[str, Any]] = {
        413: {"model": models.ErrorBody, "description": "The request body is too large."},
        503: {
            "model": models.ErrorBody,
            "description": "Shutting down, or too many runs queued (see Retry-After).",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying (when too busy).",
                    "schema": {"type": "integer"},
                }
            },
        },
    }
    if validated:
        out[422] = {
            "model": models.ValidationErrorBody,
            "description": "Bad parameters or inputs: one entry per problem.",
        }
    if keyed:
        out[401] = {
            "model": models.ErrorBody,
            "description": "Missing or wrong API key.",
            "headers": {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            },
        }
    return out


_TAG_DOC = (
    "Attribution: the run's `{}` tag (a `tags` entry of the same name in the body wins); "
    "report costs --by and the filters read it."
)
_TRACEPARENT_DOC = (
    "W3C trace context: the run's OpenTelemetry spans continue this trace, its root a child "
    "of this span (tracestate is passed on)."
)


def create_run_headers(attribution: dict[str, str]) -> list[dict[str, Any]]:
    """The optional headers ``POST /runs`` reads (``traceparent``, ``tracestate``, and the
    attribution headers ``attribution``: header name -> tag), as OpenAPI parameters."""

    def header(name: str, title: str, doc: str) -> dict[str, Any]:
        schema = {"type": "string", "title": title, "description": doc}
        return {
            "name": name,
            "in": "header",
            "required": False,
            "schema": schema,
            "description": doc,
        }

    found = [
        header("traceparent", "Traceparent", _TRACEPARENT_DOC),
        header("tracestate", "Tracestate", "W3C trace state, passed on with traceparent."),
    ]
    for name, tag in attribution.items():
        title = "-".join(part.capitalize() for part in name.split("-"))
        found.append(header(name, title, _TAG_DOC.format(tag)))
    return found


def create_run_responses(keyed: bool) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": models.RunRecord,
            "description": "The finished run (wait=true); also a failed one: see status.",
            "links": RUN_LINKS,
        },
        202: {
            "model": models.RunAccepted,
            "description": "Queued (wait=false): poll the Location.",
            "headers": {
                "Location": {
                    "description": "The run's URL, /runs/{id}.",
                    "schema": {"type": "string"},
                }
            },
            "links": RUN_LINKS,
        },
        400: {"model": models.ErrorBody, "description": "The body is not parseable JSON."},
        **error_responses(keyed=keyed, validated=True),
    }

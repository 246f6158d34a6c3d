"""A ``TraceRecord`` as MLflow entities: ``TraceInfo`` (tags, metadata, feedback) and spans.

Trace-level tokens and cost are the sums of the chat-model spans (never MLflow's own
trace-level estimate), so the trace, its spans, ``cost_summary.json`` and ``report costs``
agree. Keys we add for querying (tags and metadata both, so the UI can filter on them):

========================  ==============================================================
``ca.workflow``           flow name            ``ca.workflow_version``  flow version
``ca.status``             succeeded / failed   ``ca.models``            models, comma-joined
``ca.total_cost_usd``     run cost (metadata)  ``ca.retry_count``       retries, all nodes
``ca.input_tokens``, ``ca.output_tokens``, ``ca.total_tokens``  (metadata)
``ca.run_id``             the run's id         ``ca.run_name``          from ``run_name``
``ca.parent_trace_id``    a caller's trace id  ``ca.parent_span_id``    its span (``traceparent``)
========================  ==============================================================

A row of ``configurable-agents batch`` also has the tags ``ca.batch_id`` and ``ca.batch_row``,
and ``ca.mlflow_run`` (the batch's MLflow run), which becomes ``mlflow.sourceRun`` metadata.

User tags given with ``run --tag key=value`` are trace tags as given (``user`` and ``team``
are also recorded as MLflow's trace user and session-free ``ca.user`` / ``ca.team``).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from .spans import SpanRecord, TraceRecord, linked_prompts

if TYPE_CHECKING:
    from mlflow.entities import Span, TraceInfo

SOURCE_ID = "configurable-agents"
_PREVIEW = 1000
_META_VALUE = 250  # MLflow's limit on a metadata value


def _dump(value: Any) -> str:
    """A span attribute value as MLflow stores it (JSON). Our values are plain JSON data, so
    the C encoder does it; anything else goes through MLflow's own encoder."""
    try:
        return plain_json(value)
    except (TypeError, ValueError, RecursionError):
        from mlflow.tracing.utils import dump_span_attribute_value

        return dump_span_attribute_value(value)


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=True)
# The C encoder ``JSONEncoder.encode`` builds anew on every call (half its cost on a small
# value; a trace has ~60 of them), made once: no circular-reference check (plain data).
_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in the type stubs
_c_encoder = (
    _make_encoder(
        None, _encoder.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
    if _make_encoder is not None
    else None
)


def plain_json(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)`` for plain JSON data (TypeError otherwise)."""
    if isinstance(value, str):
        return json.encoder.encode_basestring(value)
    if _c_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return _encoder.encode(value)
    return "".join(_c_encoder(value, 0))


def span_attributes(record: SpanRecord, mlflow_trace_id: str) -> dict[str, str]:
    """The span's attributes, each value dumped as MLflow stores it."""
    attributes = {
        "mlflow.traceRequestId": _dump(mlflow_trace_id),
        "mlflow.spanType": _dump(record.span_type),
    }
    if record.inputs is not None:
        attributes["mlflow.spanInputs"] = _dump(record.inputs)
    if record.outputs is not None:
        attributes["mlflow.spanOutputs"] = _dump(record.outputs)
    for key, value in record.attributes.items():
        if value is not None:
            attributes[key] = _dump(value)
    return attributes


def _exception_event(record: SpanRecord) -> dict[str, str]:
    return {"exception.type": record.error_type or "Error", "exception.message": record.error or ""}


def span_dict(trace_id: int, record: SpanRecord, attributes: dict[str, str]) -> dict[str, Any]:
    """What MLflow's ``Span.to_dict()`` returns for this span, built without the OTel and
    MLflow span objects (the golden-rows test checks the two agree)."""
    error = record.error is not None
    return {
        "trace_id": _b64(trace_id.to_bytes(16, "big")),
        "span_id": _b64(record.span_id.to_bytes(8, "big")),
        "parent_span_id": _b64(record.parent_id.to_bytes(8, "big"))
        if record.parent_id is not None
        else None,
        "name": record.name,
        "start_time_unix_nano": record.start_ns,
        "end_time_unix_nano": max(record.end_ns, record.start_ns),
        "events": [
            {
                "name": "exception",
                "time_unix_nano": record.end_ns,
                "attributes": _exception_event(record),
            }
        ]
        if error
        else [],
        "status": {
            "code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK",
            "message": record.error if error else "",
        },
        "attributes": attributes,
        "links": [],
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("utf-8")


def _otel_span(trace_id: int, record: SpanRecord, mlflow_trace_id: str) -> Any:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

    attributes = span_attributes(record, mlflow_trace_id)
    events = []
    if record.error is not None:
        status = Status(StatusCode.ERROR, record.error)
        events.append(Event("exception", _exception_event(record), timestamp=record.end_ns))
    else:
        status = Status(StatusCode.OK)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, record.span_id, is_remote=False, trace_flags=flags)
    parent = (
        SpanContext(trace_id, record.parent_id, is_remote=False, trace_flags=flags)
        if record.parent_id is not None
        else None
    )
    return ReadableSpan(
        name=record.name,
        resource=_resource(),
        context=context,
        parent=parent,
        attributes=attributes,
        events=events,
        status=status,
        start_time=record.start_ns,
        end_time=max(record.end_ns, record.start_ns),
    )


_RESOURCE: Any = None


def _resource() -> Any:
    """One shared (empty) OTel resource: building a default one per span costs ~1 ms."""
    global _RESOURCE
    if _RESOURCE is None:
        from opentelemetry.sdk.resources import Resource

        _RESOURCE = Resource.get_empty()
    return _RESOURCE


def _preview(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def trace_totals(trace: TraceRecord) -> dict[str, Any]:
    """Tokens and cost summed over the trace's chat-model spans."""
    tokens = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    cached = 0
    input_cost = output_cost = 0.0
    priced = False
    models: list[str] = []
    for span in trace.spans:
        if span.span_type != "CHAT_MODEL":
            continue
        usage = span.attributes["mlflow.chat.tokenUsage"]
        for key in tokens:
            tokens[key] += usage.get(key, 0)
        cached += usage.get("cache_read_input_tokens", 0)
        cost = span.attributes.get("mlflow.llm.cost")
        if cost is not None:
            priced = True
            input_cost += cost["input_cost"]
            output_cost += cost["output_cost"]
        model = span.attributes["mlflow.llm.model"]
        if model not in models:
            models.append(model)
    return {
        "tokens": tokens,
        "cache_read_tokens": cached,
        "cost": {
            "input_cost": input_cost,
            "output_cost": output_cost,
            "total_cost": input_cost + output_cost,
        }
        if priced
        else None,
        "models": models,
    }


def to_mlflow(
    trace: TraceRecord, experiment_id: str, *, spans: bool = True
) -> tuple[TraceInfo, list[Span]]:
    """The trace's ``TraceInfo`` and (with ``spans``) its MLflow spans; the SQL writer builds
    span rows itself (``span_dict``) and asks for none."""
    from mlflow.entities import (
        Assessment,
        AssessmentSource,
        Feedback,
        Span,
        TraceInfo,
        TraceLocation,
        TraceState,
    )
    from mlflow.tracing.constant import TRACE_SCHEMA_VERSION

    result = trace.result
    mlflow_id = trace.mlflow_trace_id
    entities = (
        [Span(_otel_span(trace.trace_id, s, mlflow_id)) for s in trace.spans] if spans else []
    )
    totals = trace_totals(trace)
    total_cost = totals["cost"]["total_cost"] if totals["cost"] else 0.0
    retries = sum(n.retries for n in result.nodes)
    ours = {
        "ca.workflow": trace.workflow_name,
        "ca.workflow_version": trace.workflow_version,
        "ca.status": result.status,
        "ca.models": ",".join(totals["models"])[:_META_VALUE],
        "ca.run_id": result.run_id,
    }
    for key in ("user", "team", "run_name"):
        if key in trace.tags:
            ours[f"ca.{key}"] = trace.tags[key][:_META_VALUE]
    if trace.parent:  # the caller's W3C trace this run continues (its OTLP spans are in it)
        ours["ca.parent_trace_id"] = str(trace.parent["trace_id"])
        ours["ca.parent_span_id"] = str(trace.parent["span_id"])
    metadata = {
        **ours,
        "ca.total_cost_usd": repr(total_cost),
        "ca.input_tokens": str(totals["tokens"]["input_tokens"]),
        "ca.output_tokens": str(totals["tokens"]["output_tokens"]),
        "ca.total_tokens": str(totals["tokens"]["total_tokens"]),
        "ca.retry_count": str(retries),
        "mlflow.trace_schema.version": str(TRACE_SCHEMA_VERSION),
        "mlflow.traceInputs": _preview(result.inputs)[:_META_VALUE],
        "mlflow.traceOutputs": _preview(result.outputs)[:_META_VALUE],
        "mlflow.trace.tokenUsage": json.dumps(
            {**totals["tokens"], "cache_read_input_tokens": totals["cache_read_tokens"]}
            if totals["cache_read_tokens"]
            else totals["tokens"]
        ),
        "mlflow.source.name": trace.workflow_file[-_META_VALUE:],
        "mlflow.source.type": "LOCAL",
    }
    if totals["cost"] is not None:
        metadata["mlflow.trace.cost"] = json.dumps(totals["cost"])
    if result.error is not None:
        metadata["ca.error_type"] = result.error.type
        metadata["ca.error_node"] = result.error.node or ""
    if "user" in trace.tags:
        metadata["mlflow.trace.user"] = trace.tags["user"][:_META_VALUE]
    if "ca.mlflow_run" in trace.tags:  # a batch's row: its trace is listed under the batch's run
        metadata["mlflow.sourceRun"] = trace.tags["ca.mlflow_run"]
    tags = {**trace.tags, **ours, "mlflow.traceName": trace.root.name}
    prompts = linked_prompts(result)
    if prompts:  # MLflow's link of a trace to prompt versions (the UI's "linked prompts")
        tags["mlflow.linkedPrompts"] = json.dumps(prompts)
    source = AssessmentSource(source_type="CODE", source_id=SOURCE_ID)
    created = result.started_ns // 1_000_000 + int(result.duration_ms)
    assessments: list[Assessment] = [
        Feedback(
            name="cost_usd",
            value=total_cost,
            source=source,
            trace_id=mlflow_id,
            create_time_ms=created,
            last_update_time_ms=created,
            rationale="sum of the chat-model spans' cost (genai-prices or config.pricing)",
        ),
        Feedback(
            name="total_tokens",
            value=totals["tokens"]["total_tokens"],
            source=source,
            trace_id=mlflow_id,
            create_time_ms=created,
            last_update_time_ms=created,
            rationale="input + output tokens reported by the providers",
        ),
    ]
    if getattr(result, "judges", None):
        from .judge_spans import feedbacks

        assessments.extend(feedbacks(trace, mlflow_id))
    info = TraceInfo(
        trace_id=mlflow_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=result.started_ns // 1_000_000,
        execution_duration=int(result.duration_ms),
        state=TraceState.OK if result.succeeded else TraceState.ERROR,
        request_preview=_preview(result.inputs),
        response_preview=_preview(result.outputs if result.succeeded else result.error),
        client_request_id=trace.tags.get("run_name") or result.run_id,
        trace_metadata=metadata,
        tags=tags,
        assessments=assessments,
    )
    return info, entities

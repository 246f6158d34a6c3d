"""A run's span tree as OpenTelemetry spans (what the OTLP sink exports).

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``
``invoke_workflow`` / ``invoke_agent`` / ``chat`` / ``execute_tool``, ``gen_ai.request.model``,
``gen_ai.provider.name``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.tool.name``, ...) and, so that Arize Phoenix renders the tree, OpenInference
(``openinference.span.kind``, ``input.value``, ``output.value``, ``llm.token_count.*``,
``llm.model_name``, ``llm.input_messages.*``). Our own attributes (``workflow_name``,
``node.id``, ``node.retry_count``, ``node.cost_usd``, ...) are kept as they are in the MLflow
trace; cost is also ``configurable_agents.cost_usd`` on the workflow, node and model spans.
Tokens are on the model spans only, so a backend that adds them up counts each call once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .spans import SpanRecord, TraceRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext

PACKAGE = "opentelemetry-exporter-otlp-proto-http"
EXTRA = "server"
DEFAULT_SERVICE_NAME = "configurable-agents"
MAX_VALUE_CHARS = 65_536  # longer string attribute values are cut

# Our provider names as ``gen_ai.provider.name`` values (semantic-conventions well-known
# values where one exists).
PROVIDER_NAMES = {
    "google": "gcp.gemini",
    "openai": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "local": "llama_cpp",
    "test": "test",
}
OPENINFERENCE_KINDS = {
    "WORKFLOW": "CHAIN",
    "AGENT": "AGENT",
    "CHAT_MODEL": "LLM",
    "TOOL": "TOOL",
    "PARSER": "CHAIN",
    "EVALUATOR": "EVALUATOR",  # a judge's verdict (observe.trace.judge_spans)
}
OPERATIONS = {
    "WORKFLOW": "invoke_workflow",
    "AGENT": "invoke_agent",
    "CHAT_MODEL": "chat",
    "TOOL": "execute_tool",
}


# --------------------------------------------------------------------------- conversion


def _truncate(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return text[: MAX_VALUE_CHARS - 14] + "...[truncated]"


def _json(value: Any) -> str:
    return _truncate(json.dumps(value, default=str, ensure_ascii=False))


def _primitive(value: Any) -> Any:
    """An OTel-legal attribute value (``None`` for no value): primitives as they are,
    homogeneous lists of primitives as tuples, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return _truncate(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        kinds = {type(v) for v in value}
        if len(kinds) <= 1 and kinds <= {str, bool, int, float}:
            return tuple(_truncate(v) if isinstance(v, str) else v for v in value)
    return _json(value)


def _put(attributes: dict[str, Any], key: str, value: Any) -> None:
    clean = _primitive(value)
    if clean is not None:
        attributes[key] = clean


def provider_name(provider: str | None) -> str | None:
    """``gen_ai.provider.name`` for one of our provider names."""
    if not provider:
        return None
    return PROVIDER_NAMES.get(provider, provider)


def span_attributes(trace: TraceRecord, record: SpanRecord) -> dict[str, Any]:
    """The OTel attributes of one span of the tree (every value OTel-legal)."""
    attributes: dict[str, Any] = {}
    for key, value in record.attributes.items():
        if not key.startswith("mlflow."):  # translated below
            _put(attributes, key, value)
    kind = record.span_type
    _put(attributes, "configurable_agents.span_type", kind)
    _put(attributes, "workflow.name", trace.workflow_name)
    _put(attributes, "gen_ai.operation.name", OPERATIONS.get(kind))
    attributes["openinference.span.kind"] = OPENINFERENCE_KINDS.get(kind, "CHAIN")
    for side, value in (("input", record.inputs), ("output", record.outputs)):
        if isinstance(value, str):
            attributes[f"{side}.value"] = _truncate(value)
            attributes[f"{side}.mime_type"] = "text/plain"
        elif value is not None:
            attributes[f"{side}.value"] = _json(value)
            attributes[f"{side}.mime_type"] = "application/json"
    if kind == "WORKFLOW":
        _workflow_attributes(trace, record, attributes)
    elif kind == "AGENT":
        _node_attributes(record, attributes)
    elif kind == "CHAT_MODEL":
        _chat_attributes(record, attributes)
    elif kind == "TOOL":
        _tool_attributes(record, attributes)
    if record.error is not None and "error.type" not in attributes:
        attributes["error.type"] = record.error_type or "Error"
    return attributes


def _workflow_attributes(
    trace: TraceRecord, record: SpanRecord, attributes: dict[str, Any]
) -> None:
    source = record.attributes
    usage = trace.result.usage
    _put(attributes, "gen_ai.workflow.name", trace.workflow_name)
    _put(attributes, "workflow.version", trace.workflow_version)
    _put(attributes, "workflow.file", trace.workflow_file)
    _put(attributes, "workflow.node_count", source.get("node_count"))
    _put(attributes, "workflow.run_id", source.get("run_id"))
    _put(attributes, "workflow.status", source.get("status"))
    _put(attributes, "workflow.input_tokens", usage.input_tokens)
    _put(attributes, "workflow.output_tokens", usage.output_tokens)
    _put(attributes, "workflow.total_tokens", usage.total_tokens)
    _put(attributes, "configurable_agents.cost_usd", source.get("workflow.cost_usd"))
    for key, value in trace.tags.items():
        _put(attributes, f"configurable_agents.tag.{key}", value)
    if trace.tags:
        attributes["metadata"] = _json(trace.tags)  # OpenInference: shown by Phoenix
    _put(attributes, "user.id", trace.tags.get("user"))


def _node_attributes(record: SpanRecord, attributes: dict[str, Any]) -> None:
    source = record.attributes
    _put(attributes, "gen_ai.agent.name", record.name)
    _put(attributes, "gen_ai.request.model", source.get("node.model") or None)
    _put(attributes, "gen_ai.provider.name", provider_name(source.get("node.provider")))
    _put(attributes, "configurable_agents.cost_usd", source.get("node.cost_usd"))


def _chat_attributes(record: SpanRecord, attributes: dict[str, Any]) -> None:
    source = record.attributes
    model = source.get("mlflow.llm.model")
    provider = provider_name(source.get("mlflow.llm.provider"))
    usage: Mapping[str, int] = source.get("mlflow.chat.tokenUsage") or {}
    _put(attributes, "gen_ai.request.model", model)
    _put(attributes, "gen_ai.response.model", model)
    _put(attributes, "gen_ai.provider.name", provider)
    _put(attributes, "gen_ai.system", provider)  # the name before gen_ai.provider.name
    output_type = {"structured": "json", "tools": "text"}.get(source.get("llm.call_kind", ""))
    _put(attributes, "gen_ai.output.type", output_type)
    counts = {
        "input": usage.get("input_tokens"),
        "output": usage.get("output_tokens"),
        "total": usage.get("total_tokens"),
        "cache_read": usage.get("cache_read_input_tokens"),
        "cache_write": usage.get("cache_creation_input_tokens"),
    }
    _put(attributes, "gen_ai.usage.input_tokens", counts["input"])
    _put(attributes, "gen_ai.usage.output_tokens", counts["output"])
    _put(attributes, "gen_ai.usage.cache_read.input_tokens", counts["cache_read"])
    _put(attributes, "gen_ai.usage.cache_creation.input_tokens", counts["cache_write"])
    _put(attributes, "llm.token_count.prompt", counts["input"])
    _put(attributes, "llm.token_count.completion", counts["output"])
    _put(attributes, "llm.token_count.total", counts["total"])
    _put(attributes, "llm.token_count.prompt_details.cache_read", counts["cache_read"])
    _put(attributes, "llm.token_count.prompt_details.cache_write", counts["cache_write"])
    _put(attributes, "llm.model_name", model)
    _put(attributes, "llm.provider", provider)
    cost = source.get("mlflow.llm.cost")
    if cost:
        _put(attributes, "configurable_agents.cost_usd", cost.get("total_cost"))
        _put(attributes, "configurable_agents.input_cost_usd", cost.get("input_cost"))
        _put(attributes, "configurable_agents.output_cost_usd", cost.get("output_cost"))
    messages = (record.inputs or {}).get("messages") or []
    choices = (record.outputs or {}).get("choices") or []
    replies = [c["message"] for c in choices if isinstance(c, dict) and "message" in c]
    attributes["gen_ai.input.messages"] = _json([_semconv_message(m) for m in messages])
    attributes["gen_ai.output.messages"] = _json(
        [{**_semconv_message(m), "finish_reason": "stop"} for m in replies]
    )
    _openinference_messages(attributes, "llm.input_messages", messages)
    _openinference_messages(attributes, "llm.output_messages", replies)


def _semconv_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A role/content message in the GenAI conventions' message format (role and parts)."""
    role = message.get("role", "user")
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if role == "tool":
        call_id = message.get("tool_call_id")
        part = {"type": "tool_call_response", "id": call_id, "response": content}
        parts.append({k: v for k, v in part.items() if v is not None})
    elif content:
        parts.append({"type": "text", "content": content})
    for call in message.get("tool_calls") or []:
        part = {
            "type": "tool_call",
            "id": call.get("id"),
            "name": call.get("name"),
            "arguments": call.get("args", call.get("arguments")),
        }
        parts.append({k: v for k, v in part.items() if v is not None})
    return {"role": role, "parts": parts}


def _openinference_messages(
    attributes: dict[str, Any], prefix: str, messages: list[Mapping[str, Any]]
) -> None:
    for i, message in enumerate(messages):
        key = f"{prefix}.{i}.message"
        _put(attributes, f"{key}.role", message.get("role"))
        _put(attributes, f"{key}.content", message.get("content"))
        _put(attributes, f"{key}.tool_call_id", message.get("tool_call_id"))
        for j, call in enumerate(message.get("tool_calls") or []):
            function = f"{key}.tool_calls.{j}.tool_call.function"
            _put(attributes, f"{function}.name", call.get("name"))
            _put(attributes, f"{function}.arguments", _json(call.get("args", {})))


def _tool_attributes(record: SpanRecord, attributes: dict[str, Any]) -> None:
    _put(attributes, "gen_ai.tool.name", record.name)
    attributes["gen_ai.tool.type"] = "function"
    if record.inputs is not None:
        attributes["gen_ai.tool.call.arguments"] = _json(record.inputs)
        attributes["tool.parameters"] = _json(record.inputs)
    _put(attributes, "gen_ai.tool.call.result", record.outputs)
    _put(attributes, "tool.name", record.name)


_resources: dict[str, Resource] = {}
_scope_cache: list[InstrumentationScope] = []
_cache_lock = threading.Lock()


def resource(service_name: str = DEFAULT_SERVICE_NAME) -> Resource:
    """The OTel resource of our spans: ``service.name`` from the config (one per name)."""
    with _cache_lock:
        found = _resources.get(service_name)
        if found is None:
            from opentelemetry.sdk.resources import OTELResourceDetector, Resource
            from opentelemetry.sdk.version import __version__ as sdk_version

            from ... import __version__

            # Not Resource.create: it runs its detectors in a thread pool, which is refused
            # once the interpreter is shutting down (the atexit flush builds spans then).
            sdk = Resource(
                {
                    "telemetry.sdk.language": "python",
                    "telemetry.sdk.name": "opentelemetry",
                    "telemetry.sdk.version": sdk_version,
                }
            )
            ours = Resource(
                {
                    "service.name": service_name,
                    "service.version": __version__,
                    "openinference.project.name": service_name,  # Phoenix's project
                }
            )
            found = sdk.merge(OTELResourceDetector().detect()).merge(ours)
            _resources[service_name] = found
        return found


def _scope() -> InstrumentationScope:
    with _cache_lock:
        if not _scope_cache:
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope

            from ... import __version__

            _scope_cache.append(InstrumentationScope("configurable_agents", __version__))
        return _scope_cache[0]


def parent_context(parent: Mapping[str, Any] | None) -> SpanContext | None:
    """The caller's span (from an incoming W3C ``traceparent``, as ``dispatch`` stores it:
    {"trace_id", "span_id", "sampled", "tracestate"}) as a remote OTel span context."""
    if not parent:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags
    from opentelemetry.trace.span import TraceState

    state = parent.get("tracestate") or ""
    return SpanContext(
        int(parent["trace_id"], 16),
        int(parent["span_id"], 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.get("sampled", True) else 0),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )


def otel_trace_id(trace: TraceRecord) -> int:
    """The OTel trace id of a run: the caller's when the run continues its trace, else the
    run's own (its run id)."""
    parent = trace.parent
    return int(parent["trace_id"], 16) if parent else trace.trace_id


def to_otel_spans(
    trace: TraceRecord, *, service_name: str = DEFAULT_SERVICE_NAME
) -> list[ReadableSpan]:
    """A run's span tree as finished OTel spans (same ids, names, parents and times). A run
    that continues a caller's trace (``trace.parent``) is in the caller's trace, its root
    span a child of the caller's (remote) span, with the caller's ``tracestate``."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
    from opentelemetry.trace.span import TraceState

    owner = resource(service_name)
    scope = _scope()
    flags = TraceFlags(TraceFlags.SAMPLED)
    remote = parent_context(trace.parent)
    trace_id = otel_trace_id(trace)
    state = remote.trace_state if remote is not None else TraceState()
    spans = []
    for record in trace.spans:
        events = []
        if record.error is not None:
            status = Status(StatusCode.ERROR, record.error)
            events.append(
                Event(
                    "exception",
                    {
                        "exception.type": record.error_type or "Error",
                        "exception.message": _truncate(record.error),
                    },
                    timestamp=record.end_ns,
                )
            )
        else:
            status = Status(StatusCode.OK)
        context = SpanContext(
            trace_id, record.span_id, is_remote=False, trace_flags=flags, trace_state=state
        )
        parent = (
            SpanContext(
                trace_id, record.parent_id, is_remote=False, trace_flags=flags, trace_state=state
            )
            if record.parent_id is not None
            else remote
        )
        spans.append(
            ReadableSpan(
                name=record.name,
                context=context,
                parent=parent,
                resource=owner,
                attributes=span_attributes(trace, record),
                events=events,
                kind=SpanKind.CLIENT if record.span_type == "CHAT_MODEL" else SpanKind.INTERNAL,
                status=status,
                start_time=record.start_ns,
                end_time=max(record.end_ns, record.start_ns),
                instrumentation_scope=scope,
            )
        )
    return spans

"""Tier 2: the span tree of every run exported over OTLP/HTTP (OpenTelemetry).

``submit`` is called by ``observe.dispatch.observe_run`` after a run when
``observability.opentelemetry.enabled`` is true. On the caller's path it only decides
sampling (from the run's id, like OpenTelemetry's ``TraceIdRatioBased`` sampler, so
``sampling_rate: 0`` exports nothing and ``1`` everything) and appends the run to a bounded
queue. A background thread per endpoint prices the run, builds its span tree
(``observe.spans.build_trace``, the same tree as the MLflow trace), converts it with
``to_otel_spans`` and sends batches of traces through the SDK's ``OTLPSpanExporter``.

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``
``invoke_workflow`` / ``invoke_agent`` / ``chat`` / ``execute_tool``, ``gen_ai.request.model``,
``gen_ai.provider.name``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.tool.name``, ...) and, so that Arize Phoenix renders the tree, OpenInference
(``openinference.span.kind``, ``input.value``, ``output.value``, ``llm.token_count.*``,
``llm.model_name``, ``llm.input_messages.*``). Our own attributes (``workflow_name``,
``node.id``, ``node.retry_count``, ``node.cost_usd``, ...) are kept as they are in the MLflow
trace; cost is also ``configurable_agents.cost_usd`` on the workflow, node and model spans.
Tokens are on the model spans only, so a backend that adds them up counts each call once.

Failure policy (as for MLflow traces): an endpoint that refuses connections, hangs or answers
with an error never fails or stalls a run. Each export is bounded by ``timeout_seconds``; after
a failed export the endpoint's traces are dropped for ``RETRY_AFTER`` seconds instead of
queueing behind it; a full queue drops traces. Each endpoint gives at most one warning per
process (``observe.dispatch.warn_once``). ``flush`` waits (bounded) for the queues; an
``atexit`` hook flushes within ``CONFIGURABLE_AGENTS_FLUSH_TIMEOUT`` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import MissingExtraError
from .dispatch import warn_once
from .spans import SpanRecord, TraceRecord, WorkflowInfo

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from ..compile.plan import CompiledWorkflow
    from ..config.schema import OpenTelemetryConfig
    from ..run.result import RunResult

log = logging.getLogger("configurable_agents.observe")

PACKAGE = "opentelemetry-exporter-otlp-proto-http"
EXTRA = "server"
DEFAULT_SERVICE_NAME = "configurable-agents"
DEFAULT_TIMEOUT = 10.0  # seconds per export request, retries included (OTel's default)
MAX_QUEUE = 2048  # traces waiting per endpoint; more are dropped
MAX_BATCH = 64  # traces per export request
SCHEDULE_DELAY = 0.5  # seconds a batch waits for more traces (a flush sends at once)
RETRY_AFTER = 30.0  # seconds an endpoint's traces are dropped after a failed export
MAX_VALUE_CHARS = 65_536  # longer string attribute values are cut
_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

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
}
OPERATIONS = {
    "WORKFLOW": "invoke_workflow",
    "AGENT": "invoke_agent",
    "CHAT_MODEL": "chat",
    "TOOL": "execute_tool",
}


# --------------------------------------------------------------------------- sampling


_LOW_64 = (1 << 64) - 1


def sampled(trace_id: int, rate: float) -> bool:
    """Whether a trace is exported: the decision of OpenTelemetry's ``TraceIdRatioBased``
    sampler (the trace id's low 64 bits below ``rate * 2**64``), so it is the same for a
    trace id in every process. ``0`` exports nothing, ``1`` everything."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    return (trace_id & _LOW_64) < round(rate * (1 << 64))


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

            from .. import __version__

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

            from .. import __version__

            _scope_cache.append(InstrumentationScope("configurable_agents", __version__))
        return _scope_cache[0]


def to_otel_spans(
    trace: TraceRecord, *, service_name: str = DEFAULT_SERVICE_NAME
) -> list[ReadableSpan]:
    """A run's span tree as finished OTel spans (same ids, names, parents and times)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    owner = resource(service_name)
    scope = _scope()
    flags = TraceFlags(TraceFlags.SAMPLED)
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
        context = SpanContext(trace.trace_id, record.span_id, is_remote=False, trace_flags=flags)
        parent = (
            SpanContext(trace.trace_id, record.parent_id, is_remote=False, trace_flags=flags)
            if record.parent_id is not None
            else None
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


# --------------------------------------------------------------------------- export


class _ExporterLogFilter(logging.Filter):
    """Keeps the OTLP exporter's own error logs (from our export threads only) off the
    terminal and hands them to us: they become the reason in our one warning."""

    def __init__(self) -> None:
        super().__init__()
        self.captured: dict[int, list[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        messages = self.captured.get(record.thread or 0)
        if messages is None:
            return True
        with contextlib.suppress(Exception):
            messages.append(record.getMessage())
        return False


_log_filter = _ExporterLogFilter()
_filter_installed = False


@contextlib.contextmanager
def _capture_exporter_logs() -> Iterator[list[str]]:
    global _filter_installed
    if not _filter_installed:
        logging.getLogger(_EXPORTER_LOGGER).addFilter(_log_filter)
        _filter_installed = True
    ident = threading.get_ident()
    messages: list[str] = []
    _log_filter.captured[ident] = messages
    try:
        yield messages
    finally:
        _log_filter.captured.pop(ident, None)


def _reason(url: str, messages: list[str], timeout: float) -> str:
    """Why an export failed, in a few words: from the exporter's log lines when they say,
    else from one TCP connect to the endpoint (refused, or connected but no answer)."""
    import re
    import socket
    from urllib.parse import urlsplit

    text = " ".join(messages)
    if "connection refused" in text.lower():
        return "connection refused"
    status = re.search(r"code: (\d{3}), reason: ([^,]*)", text)
    if status:
        return f"HTTP {status.group(1)} {status.group(2)}".strip()
    transient = re.search(r"Transient error (.{1,120}?) encountered", text)
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "localhost", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return "connection refused"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if transient:
        return f"{transient.group(1)}; gave up after {timeout:g} s"
    return f"no answer within {timeout:g} s"


@dataclass
class QueuedRun:
    """A finished run waiting for export: everything its span tree is built from."""

    info: WorkflowInfo
    result: RunResult
    tags: dict[str, str]
    service_name: str


def _job_spans(job: QueuedRun) -> list[ReadableSpan]:
    from .cost import summarize_cost
    from .spans import build_trace

    summarize_cost(job.result)
    trace = build_trace(job.info, job.result, tags=job.tags)
    return to_otel_spans(trace, service_name=job.service_name)


class OtlpEndpoint:
    """One OTLP/HTTP endpoint: a bounded queue of finished runs and a daemon thread that
    builds their spans and exports them in batches (at most ``max_batch`` traces per request,
    after waiting up to ``schedule_delay`` seconds for more; ``flush`` sends at once).

    ``exporter`` replaces the ``OTLPSpanExporter`` (tests pass an ``InMemorySpanExporter``).
    Counters (traces): ``exported``, ``failed``, ``dropped``; ``last_error``.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        schedule_delay: float = SCHEDULE_DELAY,
        retry_after: float = RETRY_AFTER,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.schedule_delay = schedule_delay
        self.retry_after = retry_after
        self._exporter = exporter
        self._jobs: deque[QueuedRun] = deque()
        self._cond = threading.Condition()
        self._pending = 0  # queued or being exported
        self._flushing = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._down_until = 0.0
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def _warn(self, message: str) -> None:
        warn_once(f"otel:{self.url}", message)

    def submit(self, job: QueuedRun) -> bool:
        """Queue one finished run; never blocks. ``False`` when it was dropped."""
        with self._cond:
            if self._closing or len(self._jobs) >= self.max_queue:
                self.dropped += 1
                self._warn(
                    f"OpenTelemetry export to {self.url} is behind; some traces were dropped "
                    "(runs are not affected)"
                )
                return False
            self._jobs.append(job)
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="configurable-agents-otel", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until it is exported (or failed or dropped);
        ``False`` if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, stop the thread and close the exporter's connections; ``False`` if the
        thread was still busy after ``timeout`` seconds (it is a daemon; nothing waits)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            self._shutdown_exporter()
            return True
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def _shutdown_exporter(self) -> None:
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            with contextlib.suppress(Exception):
                exporter.shutdown()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    break
                deadline = time.monotonic() + self.schedule_delay
                while len(self._jobs) < self.max_batch and not (self._flushing or self._closing):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                count = min(self.max_batch, len(self._jobs))
                batch = [self._jobs.popleft() for _ in range(count)]
            try:
                self._export(batch)
            except Exception as exc:  # noqa: BLE001 - the export thread must live on
                self.failed += len(batch)
                self._warn(f"OpenTelemetry export to {self.url} failed: {exc}")
            finally:
                with self._cond:
                    self._pending -= len(batch)
                    self._cond.notify_all()
                del batch
        self._shutdown_exporter()  # closed: its connections go with the thread

    def _make_exporter(self) -> SpanExporter:
        if self._exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as exc:
                raise MissingExtraError(PACKAGE, EXTRA, "OpenTelemetry export") from exc
            self._exporter = OTLPSpanExporter(
                endpoint=self.url, headers=self.headers, timeout=self.timeout
            )
        return self._exporter

    def _export(self, batch: list[QueuedRun]) -> None:
        if time.monotonic() < self._down_until:
            self.dropped += len(batch)  # the endpoint just failed: do not queue behind it
            return
        spans: list[ReadableSpan] = []
        traces = 0
        for job in batch:
            try:
                spans.extend(_job_spans(job))
                traces += 1
            except Exception as exc:  # noqa: BLE001 - one bad run never stops the others
                self.failed += 1
                warn_once(
                    "otel-build",
                    f"could not build an OpenTelemetry trace ({type(exc).__name__}: {exc})",
                )
        if not spans:
            return
        from opentelemetry.sdk.trace.export import SpanExportResult

        exporter = self._make_exporter()
        with _capture_exporter_logs() as messages:
            try:
                outcome = exporter.export(spans)
            except Exception as exc:  # noqa: BLE001 - reported below
                messages.append(f"{type(exc).__name__}: {exc}")
                outcome = SpanExportResult.FAILURE
        if outcome == SpanExportResult.SUCCESS:
            self.exported += traces
            return
        self.failed += traces
        self._down_until = time.monotonic() + self.retry_after
        self.last_error = _reason(self.url, messages, self.timeout)
        self._warn(
            f"could not export traces to the OpenTelemetry endpoint {self.url} "
            f"({self.last_error}); runs are not affected"
        )


# --------------------------------------------------------------------------- the process's


_endpoints: dict[tuple[str, tuple[tuple[str, str], ...], float], OtlpEndpoint] = {}
_registry_lock = threading.Lock()
_atexit_registered = False
_available: bool | None = None


def require_otel() -> None:
    """Raise ``MissingExtraError`` when the OTLP exporter is not installed (checked once,
    without importing it: the import happens in the export thread)."""
    global _available
    if _available is None:
        _available = all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
        )
    if not _available:
        raise MissingExtraError(PACKAGE, EXTRA, "OpenTelemetry export")


def endpoint(config: OpenTelemetryConfig) -> OtlpEndpoint:
    """The process's exporter for the config's endpoint, headers and timeout."""
    global _atexit_registered
    timeout = float(config.timeout_seconds)
    key = (config.endpoint, tuple(sorted(config.headers.items())), timeout)
    with _registry_lock:
        found = _endpoints.get(key)
        if found is None:
            found = _endpoints[key] = OtlpEndpoint(config.endpoint, config.headers, timeout)
            if not _atexit_registered:
                atexit.register(flush_at_exit)
                _atexit_registered = True
        return found


def submit(
    compiled: CompiledWorkflow,
    result: RunResult,
    config: OpenTelemetryConfig,
    tags: Mapping[str, str] | None = None,
) -> bool:
    """Queue a finished run for export, if sampled; ``True`` when queued. Cheap: no spans
    are built here. Raises ``MissingExtraError`` when the exporter is not installed."""
    if result.run_id:
        keep = sampled(int(result.run_id, 16), config.sampling_rate)
    else:
        keep = random.random() < config.sampling_rate
    if not keep:
        return False
    require_otel()
    job = QueuedRun(WorkflowInfo.of(compiled), result, dict(tags or {}), config.service_name)
    return endpoint(config).submit(job)


def endpoints() -> list[OtlpEndpoint]:
    with _registry_lock:
        return list(_endpoints.values())


def flush(timeout: float | None = None) -> bool:
    """Wait until every queued trace is exported (or failed); ``False`` after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for target in endpoints():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = target.flush(remaining) and done
    return done


def shutdown(timeout: float | None = 5.0) -> bool:
    """Flush and stop every endpoint's thread and connections (tests; a long-lived host
    that turns export off). Later runs start new ones."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _registry_lock:
        targets = list(_endpoints.values())
        _endpoints.clear()
    done = True
    for target in targets:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = target.close(remaining) and done
    return done


def flush_at_exit() -> None:
    from .tracing import FLUSH_TIMEOUT_ENV, flush_timeout

    timeout = flush_timeout()
    deadline = time.monotonic() + timeout
    for target in endpoints():
        if not target.pending:
            continue
        if not target.flush(max(0.0, deadline - time.monotonic())):
            target._warn(
                f"{target.pending} trace(s) were not exported to {target.url} within "
                f"{timeout:.0f} s and are lost (set {FLUSH_TIMEOUT_ENV} to wait longer)"
            )

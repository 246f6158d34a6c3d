"""Tier 2: every run's span tree exported over OTLP/HTTP with gen_ai.* attributes.

Checked against a real OTLP backend on loopback (an MLflow server's ``/v1/traces``, read back
with ``MlflowClient``) and against a small OTLP receiver in this file that decodes what it
gets (for sampling, headers and the CLI's exit flush). Dead and hung endpoints never stall or
fail a run and give one warning.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe import dispatch, otel
from configurable_agents.observe.trace.spans import SequentialIds, WorkflowInfo, build_trace
from servers import skip_unless_ci

from conftest import EXAMPLES, MINIMAL
from test_cli import cli

# gemini-2.5-flash list price: $0.30 per million input tokens, $2.50 per million output tokens.
FLASH_IN, FLASH_OUT = 0.30e-6, 2.50e-6
REVIEW_TREE = [
    ("workflow_review_loop", None),
    ("write", "workflow_review_loop"),
    ("chat gemini-2.5-flash", "write"),
    ("review", "workflow_review_loop"),
    ("chat gemini-2.5-flash", "review"),
    ("write", "workflow_review_loop"),
    ("chat gemini-2.5-flash", "write"),
    ("review", "workflow_review_loop"),
    ("chat gemini-2.5-flash", "review"),
]
# The CLI's notice from before this tier existed; not ours to count (cli/app.py drops it).
OLD_CLI_NOTICE = "does not export OTLP spans yet"

FAILING = MINIMAL.replace(
    "config:\n  llm: {provider: test}",
    "config:\n  llm:\n    provider: test\n    responses: {write: [{article: 5}]}\n"
    "  execution: {max_retries: 0}",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_exporters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no exporters and no warnings given; its threads are stopped."""
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        skip_unless_ci("opentelemetry-exporter-otlp-proto-http is not installed (server extra)")
    otel.shutdown(10)
    monkeypatch.setattr(dispatch, "_warned", set())
    yield
    assert otel.shutdown(15), "an export thread did not stop"


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_given() -> Iterator[list[str]]:
    """The observability warnings logged during the test."""
    handler = _Messages()
    logger = logging.getLogger("configurable_agents.observe")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        received: list[Any] = []
        headers: list[dict[str, str]] = []
        self.requests = received
        self.headers = headers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(request)
                headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[tuple[Any, Any]]:
        """(resource, span) for every span received."""
        return [
            (resource_spans.resource, span)
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def trace_ids(self) -> set[str]:
        return {span.trace_id.hex() for _, span in self.spans()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung collector)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def exporting(path: Path | str, endpoint: str, **settings: Any) -> ca.CompiledWorkflow:
    """The workflow compiled with OpenTelemetry export on (MLflow tracing stays off)."""
    workflow = ca.compile_workflow(ca.load_workflow(path))
    config = workflow.workflow.spec.config.observability.opentelemetry
    config.enabled = True
    config.endpoint = endpoint
    for key, value in settings.items():
        setattr(config, key, value)
    assert not workflow.workflow.spec.config.observability.mlflow.enabled
    return workflow


def otel_yaml(endpoint: str, text: str = MINIMAL, **settings: Any) -> str:
    lines = ["      enabled: true", f"      endpoint: '{endpoint}'"]
    lines += [f"      {key}: {json.dumps(value)}" for key, value in settings.items()]
    section = "config:\n  observability:\n    opentelemetry:\n" + "\n".join(lines) + "\n"
    return text.replace("config:\n", section, 1)


def legal(value: Any) -> bool:
    """An OTel attribute value: a primitive or a homogeneous sequence of primitives."""
    primitives = (str, bool, int, float)
    if isinstance(value, primitives):
        return True
    return (
        isinstance(value, tuple)
        and len({type(v) for v in value}) <= 1
        and all(isinstance(v, primitives) for v in value)
    )


# --------------------------------------------------------------------------- conversion


def test_the_span_tree_as_otel_spans():
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.trace import SpanKind, StatusCode

    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(workflow, {"topic": "bees"})
    cost = ca.summarize_cost(result)
    trace = build_trace(workflow, result, ids=SequentialIds(), tags={"user": "ana"})
    spans = otel.to_otel_spans(trace, service_name="svc-a")

    client, internal = SpanKind.CLIENT, SpanKind.INTERNAL
    shape = [
        (
            s.context.span_id,
            s.parent.span_id if s.parent else None,
            s.name,
            s.kind,
            s.attributes.get("gen_ai.operation.name"),
            s.attributes["openinference.span.kind"],
        )
        for s in spans
    ]
    assert shape == [
        (1, None, "workflow_review_loop", internal, "invoke_workflow", "CHAIN"),
        (2, 1, "write", internal, "invoke_agent", "AGENT"),
        (3, 2, "chat gemini-2.5-flash", client, "chat", "LLM"),
        (4, 1, "review", internal, "invoke_agent", "AGENT"),
        (5, 4, "chat gemini-2.5-flash", client, "chat", "LLM"),
        (6, 1, "write", internal, "invoke_agent", "AGENT"),
        (7, 6, "chat gemini-2.5-flash", client, "chat", "LLM"),
        (8, 1, "review", internal, "invoke_agent", "AGENT"),
        (9, 8, "chat gemini-2.5-flash", client, "chat", "LLM"),
    ]
    assert {s.context.trace_id for s in spans} == {int(result.run_id, 16)}
    assert {s.resource.attributes["service.name"] for s in spans} == {"svc-a"}
    assert all(s.status.status_code == StatusCode.OK for s in spans)
    assert all(legal(v) for s in spans for v in s.attributes.values())

    root = spans[0].attributes
    assert root["gen_ai.workflow.name"] == root["workflow.name"] == "review_loop"
    assert (root["workflow.version"], root["workflow.node_count"]) == ("1.0.0", 2)
    assert (root["workflow_name"], root["workflow_version"], root["node_count"]) == (
        "review_loop",
        "1.0.0",
        2,
    )
    assert root["workflow.run_id"] == result.run_id and root["workflow.status"] == "succeeded"
    assert root["configurable_agents.cost_usd"] == pytest.approx(cost.total_usd)
    assert root["user.id"] == "ana" and root["configurable_agents.tag.user"] == "ana"
    assert json.loads(root["input.value"]) == {"topic": "bees"}
    assert "gen_ai.usage.input_tokens" not in root  # tokens only on model spans

    nodes = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "invoke_agent"]
    for span, record in zip(nodes, result.nodes, strict=True):
        attrs = span.attributes
        assert attrs["gen_ai.agent.name"] == attrs["node.id"] == record.node
        assert attrs["node.retry_count"] == 0
        assert attrs["node.cost_usd"] == pytest.approx(record.cost_usd)
        assert attrs["configurable_agents.cost_usd"] == pytest.approx(record.cost_usd)
        assert attrs["node.output_fields"] == tuple(record.outputs)
        assert "gen_ai.usage.input_tokens" not in attrs

    chats = [s.attributes for s in spans if s.kind == client]
    calls = [call for record in result.nodes for call in record.calls]
    for attrs, call in zip(chats, calls, strict=True):
        assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gemini-2.5-flash"
        assert attrs["llm.model_name"] == "gemini-2.5-flash"
        assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "test"
        assert attrs["gen_ai.usage.input_tokens"] == call.usage.input_tokens
        assert attrs["gen_ai.usage.output_tokens"] == call.usage.output_tokens
        assert attrs["llm.token_count.prompt"] == call.usage.input_tokens
        assert attrs["llm.token_count.completion"] == call.usage.output_tokens
        assert attrs["llm.token_count.total"] == call.usage.total_tokens
        assert attrs["configurable_agents.cost_usd"] == pytest.approx(
            call.usage.input_tokens * FLASH_IN + call.usage.output_tokens * FLASH_OUT
        )
        assert attrs["llm.input_messages.0.message.role"] == "user"
        messages = json.loads(attrs["gen_ai.input.messages"])
        assert messages[0]["parts"][0]["type"] == "text"
        assert json.loads(attrs["gen_ai.output.messages"])[0]["role"] == "assistant"
    assert sum(a["gen_ai.usage.input_tokens"] for a in chats) == 62
    assert sum(a["gen_ai.usage.output_tokens"] for a in chats) == 19

    request = encode_spans(spans)  # what goes on the wire: every value encodes
    assert sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans) == 9


def test_tool_spans_and_a_failed_run():
    from opentelemetry.trace import StatusCode

    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "calculator_tools.yaml"))
    result = ca.run_workflow(workflow, {"question": "2+2"})
    ca.summarize_cost(result)
    spans = otel.to_otel_spans(build_trace(workflow, result, ids=SequentialIds()))
    tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert [s.name for s in tools] == ["calculator", "current_time"]
    solve = next(s for s in spans if s.name == "solve")
    for span in tools:
        assert span.parent is not None and span.parent.span_id == solve.context.span_id
        assert span.attributes["gen_ai.tool.name"] == span.attributes["tool.name"] == span.name
        assert span.attributes["openinference.span.kind"] == "TOOL"
    assert json.loads(tools[0].attributes["gen_ai.tool.call.arguments"]) == {"expression": "2 + 2"}
    assert tools[0].attributes["gen_ai.tool.call.result"] == "4"
    assert tools[0].attributes["output.mime_type"] == "text/plain"
    assert solve.attributes["node.tools"] == ("calculator", "current_time")

    broken = ca.compile_workflow(ca.load_workflow(_write(FAILING)))
    failed = ca.run_workflow(broken, {"topic": "x"})
    assert failed.status == "failed"
    spans = otel.to_otel_spans(build_trace(broken, failed, ids=SequentialIds()))
    by_name = {s.name: s for s in spans}
    assert [s.name for s in spans] == [
        "workflow_demo",
        "write",
        "chat test",
        "validate_output",
    ]
    for name in ("workflow_demo", "write", "validate_output"):
        span = by_name[name]
        assert span.status.status_code == StatusCode.ERROR, name
        assert [e.name for e in span.events] == ["exception"]
        assert span.attributes["error.type"]
    assert by_name["chat test"].status.status_code == StatusCode.OK
    assert by_name["workflow_demo"].attributes["error.type"] == failed.error.type


def _write(text: str) -> Path:
    path = Path.cwd() / f"wf-{uuid.uuid4().hex[:8]}.yaml"  # the test's own temporary cwd
    path.write_text(text, encoding="utf-8")
    return path


def test_sampling_matches_the_sdk_ratio_sampler():
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(2000)]
    for rate in (0.0, 0.01, 0.3, 0.5, 0.99, 1.0):
        sampler = TraceIdRatioBased(rate)
        expected = [
            sampler.should_sample(None, i, "x").decision == Decision.RECORD_AND_SAMPLE for i in ids
        ]
        assert [otel.sampled(i, rate) for i in ids] == expected, rate


# --------------------------------------------------------------------------- the exporter


class _Recording:
    """An in-memory span exporter that counts its export calls (one per batch)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.memory = InMemorySpanExporter()
        self.calls = 0
        self.entered = threading.Event()
        self.gate = gate

    def export(self, spans: Any) -> Any:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return self.memory.export(spans)

    def shutdown(self) -> None:
        self.memory.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _queued(workflow: ca.CompiledWorkflow, topic: str) -> otel.QueuedRun:
    result = ca.run_workflow(workflow, {"topic": topic})
    return otel.QueuedRun(WorkflowInfo.of(workflow), result, {}, "svc")


def test_runs_are_exported_in_batches_and_built_off_the_callers_thread(monkeypatch):
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    exporter = _Recording()
    target = otel.OtlpEndpoint("memory:", exporter=exporter, schedule_delay=30)  # type: ignore[arg-type]
    built_in: list[str] = []
    build = otel._job_spans

    def spy(job: otel.QueuedRun) -> Any:
        built_in.append(threading.current_thread().name)
        return build(job)

    monkeypatch.setattr(otel, "_job_spans", spy)
    jobs = [_queued(workflow, f"t{i}") for i in range(3)]
    for job in jobs:
        assert target.submit(job)
    assert not built_in  # nothing is built when a run is queued
    started = time.perf_counter()
    assert target.flush(10)  # sends at once, without waiting out the 30 s batch delay
    assert time.perf_counter() - started < 5
    assert exporter.calls == 1  # one request for the three traces
    assert set(built_in) == {"configurable-agents-otel"}
    spans = exporter.memory.get_finished_spans()
    assert len(spans) == 3 * 9
    assert {f"{s.context.trace_id:032x}" for s in spans} == {j.result.run_id for j in jobs}
    assert target.exported == 3 and target.pending == 0
    assert target.close(5)


def test_a_full_queue_drops_runs_with_one_warning(warnings_given):
    workflow = ca.compile_workflow(ca.load_workflow(minimal_path()))
    gate = threading.Event()
    exporter = _Recording(gate)
    target = otel.OtlpEndpoint(
        "memory:",
        exporter=exporter,  # type: ignore[arg-type]
        max_queue=2,
        max_batch=1,
        schedule_delay=0,
    )
    try:
        assert target.submit(_queued(workflow, "first"))
        assert exporter.entered.wait(10)  # the thread is exporting the first (held at the gate)
        assert target.submit(_queued(workflow, "second"))
        assert target.submit(_queued(workflow, "third"))
        assert not target.submit(_queued(workflow, "fourth"))
        assert not target.submit(_queued(workflow, "fifth"))
    finally:
        gate.set()
    assert target.flush(10)
    assert (target.exported, target.dropped) == (3, 2)
    assert len(warnings_given) == 1 and "some traces were dropped" in warnings_given[0]
    assert target.close(5)


def minimal_path() -> Path:
    return _write(MINIMAL)


# --------------------------------------------------------------------------- sampling, wire


def test_sampling_rate_zero_exports_nothing_and_one_everything(receiver):
    path = minimal_path()
    none = exporting(path, receiver.url, sampling_rate=0.0)
    for i in range(4):
        ca.run_workflow(none, {"topic": f"n{i}"}).raise_for_status()
    assert ca.flush(10)
    assert receiver.requests == [] and otel.endpoints() == []

    every = exporting(path, receiver.url, sampling_rate=1.0)
    runs = [ca.run_workflow(every, {"topic": f"a{i}"}) for i in range(4)]
    assert ca.flush(30)
    assert receiver.trace_ids() == {r.run_id for r in runs}
    assert len(receiver.spans()) == 4 * 3  # workflow, node, model call per run


def test_sampling_is_decided_per_trace_id(receiver):
    workflow = exporting(minimal_path(), receiver.url, sampling_rate=0.5)
    runs = [ca.run_workflow(workflow, {"topic": f"s{i}"}) for i in range(24)]
    assert ca.flush(30)
    expected = {r.run_id for r in runs if otel.sampled(int(r.run_id, 16), 0.5)}
    assert receiver.trace_ids() == expected
    assert 0 < len(expected) < 24
    assert {span.trace_id.hex() for _, span in receiver.spans() if not span.parent_span_id} == (
        expected
    )


def test_headers_resource_and_attributes_on_the_wire(receiver):
    workflow = exporting(
        EXAMPLES / "review_loop.yaml",
        receiver.url,
        headers={"x-team-token": "abc"},
        service_name="review-service",
    )
    result = ca.run_workflow(workflow, {"topic": "bees"})
    assert ca.flush(30)
    assert receiver.headers and receiver.headers[0]["x-team-token"] == "abc"
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"
    spans = receiver.spans()
    assert len(spans) == 9
    for resource, _ in spans:
        names = {a.key: a.value.string_value for a in resource.attributes}
        assert names["service.name"] == "review-service"
    chats = [span for _, span in spans if span.name.startswith("chat ")]
    tokens = [
        {a.key: a.value.int_value for a in span.attributes if a.key.startswith("gen_ai.usage.")}
        for span in chats
    ]
    assert sum(t["gen_ai.usage.input_tokens"] for t in tokens) == 62
    assert sum(t["gen_ai.usage.output_tokens"] for t in tokens) == 19
    assert all(span.kind == span.SPAN_KIND_CLIENT for span in chats)
    assert receiver.trace_ids() == {result.run_id}


# --------------------------------------------------------------------------- MLflow server


@pytest.fixture
def mlflow_experiment(mlflow_server: Any) -> tuple[Any, str, dict[str, str]]:
    """(client, experiment id, OTLP headers) for a new experiment on the MLflow server."""
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url)
    experiment = client.create_experiment(f"otel-{uuid.uuid4().hex[:8]}")
    return client, experiment, {"x-mlflow-experiment-id": experiment}


def _read_back(client: Any, run_id: str) -> Any:
    return client.get_trace(f"tr-{run_id}")  # MLflow names an OTLP trace tr-<trace id>


def _tree(trace: Any) -> list[tuple[str, str | None]]:
    by_id = {s.span_id: s for s in trace.data.spans}
    spans = sorted(trace.data.spans, key=lambda s: (s.start_time_ns, s.span_id))
    return [(s.name, by_id[s.parent_id].name if s.parent_id else None) for s in spans]


def test_round_trip_through_an_mlflow_server(mlflow_server, mlflow_experiment):
    client, experiment, headers = mlflow_experiment
    endpoint = f"{mlflow_server.url}/v1/traces"
    # A generous timeout: the server's first OTLP request takes seconds (it loads on demand).
    workflow = exporting(
        EXAMPLES / "review_loop.yaml", endpoint, headers=headers, timeout_seconds=60
    )
    result = ca.run_workflow(workflow, {"topic": "bees"}, tags={"team": "search"})
    assert ca.flush(120)
    (target,) = otel.endpoints()
    assert target.exported == 1, target.last_error

    trace = _read_back(client, result.run_id)
    assert _tree(trace) == REVIEW_TREE
    assert str(trace.info.state).endswith("OK")
    assert trace.info.token_usage == {"input_tokens": 62, "output_tokens": 19, "total_tokens": 81}
    spans = sorted(trace.data.spans, key=lambda s: (s.start_time_ns, s.span_id))
    assert [s.span_type for s in spans[:3]] == ["CHAIN", "AGENT", "LLM"]

    root = spans[0]
    assert root.get_attribute("gen_ai.operation.name") == "invoke_workflow"
    assert root.get_attribute("workflow.name") == "review_loop"
    assert root.get_attribute("workflow.version") == "1.0.0"
    assert root.get_attribute("node_count") == 2
    assert root.get_attribute("workflow.run_id") == result.run_id
    assert root.get_attribute("configurable_agents.tag.team") == "search"
    assert root.get_attribute("configurable_agents.cost_usd") == pytest.approx(
        62 * FLASH_IN + 19 * FLASH_OUT
    )
    assert root.inputs == {"topic": "bees"}

    nodes = [s for s in spans if s.get_attribute("gen_ai.operation.name") == "invoke_agent"]
    assert [n.get_attribute("node.id") for n in nodes] == ["write", "review", "write", "review"]
    assert all(n.get_attribute("node.retry_count") == 0 for n in nodes)
    assert sum(n.get_attribute("node.cost_usd") for n in nodes) == pytest.approx(
        62 * FLASH_IN + 19 * FLASH_OUT
    )

    chats = [s for s in spans if s.get_attribute("gen_ai.operation.name") == "chat"]
    assert len(chats) == 4
    for chat in chats:
        assert chat.get_attribute("gen_ai.request.model") == "gemini-2.5-flash"
        assert chat.get_attribute("gen_ai.provider.name") == "test"
    assert sum(c.get_attribute("gen_ai.usage.input_tokens") for c in chats) == 62
    assert sum(c.get_attribute("gen_ai.usage.output_tokens") for c in chats) == 19
    assert sum(c.get_attribute("llm.token_count.total") for c in chats) == 81

    found = client.search_traces(locations=[experiment])
    assert [t.info.trace_id for t in found] == [f"tr-{result.run_id}"]


def test_tool_spans_and_errors_round_trip_through_mlflow(mlflow_server, mlflow_experiment):
    client, _, headers = mlflow_experiment
    endpoint = f"{mlflow_server.url}/v1/traces"
    tools = exporting(
        EXAMPLES / "calculator_tools.yaml", endpoint, headers=headers, timeout_seconds=60
    )
    broken = exporting(_write(FAILING), endpoint, headers=headers, timeout_seconds=60)
    ok = ca.run_workflow(tools, {"question": "2+2"})
    failed = ca.run_workflow(broken, {"topic": "x"})
    assert ca.flush(120)
    assert [t.exported for t in otel.endpoints()] == [2], otel.endpoints()[0].last_error

    trace = _read_back(client, ok.run_id)
    tree = _tree(trace)
    assert tree[:2] == [("workflow_calculator_tools", None), ("solve", "workflow_calculator_tools")]
    tool_spans = [s for s in trace.data.spans if s.span_type == "TOOL"]
    assert sorted(s.name for s in tool_spans) == ["calculator", "current_time"]
    for span in tool_spans:
        assert (span.name, "solve") in tree
        assert span.get_attribute("gen_ai.operation.name") == "execute_tool"
        assert span.get_attribute("gen_ai.tool.name") == span.name
    calculator = next(s for s in tool_spans if s.name == "calculator")
    assert calculator.inputs == {"expression": "2 + 2"}
    assert calculator.get_attribute("gen_ai.tool.call.result") == "4"
    assert trace.info.token_usage["total_tokens"] == ok.usage.total_tokens

    trace = _read_back(client, failed.run_id)
    assert str(trace.info.state).endswith("ERROR")
    statuses = {s.name: str(s.status.status_code) for s in trace.data.spans}
    assert statuses["workflow_demo"].endswith("ERROR")
    assert statuses["validate_output"].endswith("ERROR")


# --------------------------------------------------------------------------- failures


def test_a_dead_endpoint_never_stalls_a_run_and_warns_once(warnings_given):
    workflow = exporting(
        EXAMPLES / "review_loop.yaml", "http://127.0.0.1:1/v1/traces", timeout_seconds=2
    )
    started = time.perf_counter()
    first = ca.run_workflow(workflow, {"topic": "bees"})
    assert time.perf_counter() - started < 2  # the run did not wait for the export
    assert first.succeeded
    started = time.perf_counter()
    assert ca.flush(10)
    assert time.perf_counter() - started < 5
    second = ca.run_workflow(workflow, {"topic": "wasps"})
    assert second.succeeded and ca.flush(10)
    (target,) = otel.endpoints()
    assert (target.exported, target.failed, target.dropped) == (0, 1, 1)
    assert len(warnings_given) == 1, warnings_given
    assert "http://127.0.0.1:1/v1/traces" in warnings_given[0]
    assert "connection refused" in warnings_given[0]


def test_a_hung_endpoint_never_stalls_a_run_and_flush_keeps_its_timeout(
    silent_port, warnings_given
):
    endpoint = f"http://127.0.0.1:{silent_port}/v1/traces"
    workflow = exporting(EXAMPLES / "review_loop.yaml", endpoint, timeout_seconds=1)
    started = time.perf_counter()
    result = ca.run_workflow(workflow, {"topic": "bees"})
    assert result.succeeded and time.perf_counter() - started < 2
    started = time.perf_counter()
    assert not ca.flush(0.3)  # still waiting for an answer that never comes
    assert time.perf_counter() - started < 1
    started = time.perf_counter()
    assert ca.flush(10)  # the export gives up after timeout_seconds
    assert time.perf_counter() - started < 5
    assert len(warnings_given) == 1, warnings_given
    assert "no answer within 1 s" in warnings_given[0]


def test_an_endpoint_answering_with_an_error_warns_once(mlflow_server, warnings_given):
    # An MLflow server refuses OTLP requests without the experiment header (HTTP 422).
    workflow = exporting(minimal_path(), f"{mlflow_server.url}/v1/traces", timeout_seconds=30)
    for topic in ("a", "b"):
        assert ca.run_workflow(workflow, {"topic": topic}).succeeded
        assert ca.flush(60)
    (target,) = otel.endpoints()
    assert (target.exported, target.failed, target.dropped) == (0, 1, 1)
    assert len(warnings_given) == 1, warnings_given
    assert "HTTP 422" in warnings_given[0]


def test_a_missing_exporter_package_is_one_warning(monkeypatch, warnings_given):
    monkeypatch.setattr(otel, "_available", False)
    workflow = exporting(minimal_path(), "http://127.0.0.1:1/v1/traces")
    for topic in ("a", "b"):
        assert ca.run_workflow(workflow, {"topic": topic}).succeeded
    assert len(warnings_given) == 1
    assert "opentelemetry-exporter-otlp-proto-http" in warnings_given[0]
    assert otel.endpoints() == []


def _warnings(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("warning:") and OLD_CLI_NOTICE not in line
    ]


@pytest.mark.parametrize("kind", ["dead", "hung"])
def test_the_cli_exits_normally_with_one_warning(kind, write_workflow, silent_port):
    port = 1 if kind == "dead" else silent_port
    path = write_workflow(otel_yaml(f"http://127.0.0.1:{port}/v1/traces", timeout_seconds=1))
    started = time.perf_counter()
    proc = cli("run", path, "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    warnings = _warnings(proc.stderr)
    assert len(warnings) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in warnings[0]
    assert "Workflow cost:" in proc.stderr
    assert time.perf_counter() - started < 60


def test_the_cli_exports_before_it_exits(receiver, write_workflow):
    path = write_workflow(otel_yaml(receiver.url, service_name="cli-run"))
    proc = cli("run", path, "-i", "topic=x", "--json")
    assert proc.returncode == 0, proc.stderr
    assert not _warnings(proc.stderr), proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    assert receiver.trace_ids() == {run_id}
    assert sorted(span.name for _, span in receiver.spans()) == [
        "chat test",
        "workflow_demo",
        "write",
    ]

"""Tier 2: every run's span tree exported over OTLP/HTTP through the OpenTelemetry SDK.

Runs are spooled and drained (``Drainer(open_spool(path)).drain``, in-process) into real OTLP
receivers on loopback: a small OTLP/HTTP endpoint in this file that decodes what it is sent
(spans, headers; it can answer with an error or be down), and an MLflow server's
``/v1/traces`` (read back with ``MlflowClient``). Settings come from the workflow file or the
standard ``OTEL_*`` variables; a run served with a ``traceparent`` continues the caller's trace.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.exceptions import MissingExtraError
from configurable_agents.observe import dispatch
from configurable_agents.observe.trace import drain, otlp
from configurable_agents.observe.trace.drain import Drainer
from configurable_agents.observe.trace.otlp_spans import to_otel_spans
from configurable_agents.observe.trace.spans import SequentialIds, build_trace
from configurable_agents.observe.trace.spool import open_spool, spool_path
from servers import free_port, skip_unless_ci

from conftest import EXAMPLES, FAILING, MINIMAL

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
OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """No OTEL_* variables from outside, and (unless the test's name says ``detached``) no
    detached drainer: the test drains in-process."""
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        skip_unless_ci("opentelemetry-exporter-otlp-proto-http is not installed (server extra)")
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if "detached" not in request.node.name:
        monkeypatch.setattr(drain, "ensure_drained", lambda spool, sinks: None)
    # ``ca.flush`` waits for the runs this process spooled: only for this test's.
    monkeypatch.setattr(dispatch.OBSERVER, "_records", {})


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint on 127.0.0.1 that keeps what it is sent. It
    answers ``statuses.pop(0)`` while that list has entries, else ``status``."""

    def __init__(self, port: int = 0) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.statuses: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = owner.statuses.pop(0) if owner.statuses else owner.status
                if status == 200:
                    parsed = ExportTraceServiceRequest()
                    parsed.ParseFromString(body)
                    owner.requests.append(parsed)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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


def otel_yaml(text: str = MINIMAL, **settings: Any) -> str:
    """The workflow with ``opentelemetry`` on and these settings (only these: the others
    come from the OTEL_* variables or the defaults)."""
    lines = ["      enabled: true"]
    lines += [f"      {key}: {json.dumps(value)}" for key, value in settings.items()]
    section = "config:\n  observability:\n    opentelemetry:\n" + "\n".join(lines) + "\n"
    return text.replace("config:\n", section, 1)


def workflow(text: str) -> ca.CompiledWorkflow:
    path = Path.cwd() / f"wf-{uuid.uuid4().hex[:8]}.yaml"  # the test's own temporary cwd
    path.write_text(text, encoding="utf-8")
    return ca.compile_workflow(ca.load_workflow(path))


def exporting(text: str = MINIMAL, **settings: Any) -> ca.CompiledWorkflow:
    return workflow(otel_yaml(text, **settings))


def drained(timeout: float = 60) -> Drainer:
    """Drain the spool in this process until nothing is pending (or fail)."""
    drainer = Drainer(open_spool(spool_path()))
    try:
        left = drainer.drain(timeout)
        assert left == 0, [(s.pending, s.last_error) for s in drainer.spool.sinks()]
    finally:
        drainer.close()
    return drainer


def otlp_sink(drainer: Drainer) -> otlp.OtlpSink:
    """The OTLP sink the drainer used last (closed by now; kept for its counters)."""
    sink = [s for s in drainer.opened if isinstance(s, otlp.OtlpSink)][-1]
    assert isinstance(sink, otlp.OtlpSink)
    return sink


@pytest.fixture(autouse=True)
def _keep_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sinks opened in this test, in order (``Drainer.opened``), for their counters."""
    opened: list[Any] = []
    real = drain.open_sink

    def recording(kind: str, target: dict[str, Any], spool_path: Any = None) -> Any:
        sink = real(kind, target, spool_path)
        opened.append(sink)
        return sink

    monkeypatch.setattr(drain, "open_sink", recording)
    monkeypatch.setattr(Drainer, "opened", opened, raising=False)


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        value = a.value
        out[a.key] = getattr(value, value.WhichOneof("value"))
    return out


def tree(spans: list[tuple[Any, Any]]) -> list[tuple[str, str | None]]:
    by_id = {span.span_id: span for _, span in spans}
    ordered = sorted((s for _, s in spans), key=lambda s: (s.start_time_unix_nano, s.span_id))
    return [(s.name, by_id[s.parent_span_id].name if s.parent_span_id else None) for s in ordered]


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

    compiled = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(compiled, {"topic": "bees"})
    cost = ca.summarize_cost(result)
    trace = build_trace(compiled, result, ids=SequentialIds(), tags={"user": "ana"})
    spans = to_otel_spans(trace, service_name="svc-a")

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
    assert root["workflow.run_id"] == result.run_id and root["workflow.status"] == "succeeded"
    assert root["configurable_agents.cost_usd"] == pytest.approx(cost.total_usd)
    assert root["user.id"] == "ana" and root["configurable_agents.tag.user"] == "ana"
    assert json.loads(root["input.value"]) == {"topic": "bees"}
    assert "gen_ai.usage.input_tokens" not in root  # tokens only on model spans

    chats = [s.attributes for s in spans if s.kind == client]
    calls = [call for record in result.nodes for call in record.calls]
    for attributes, call in zip(chats, calls, strict=True):
        assert attributes["gen_ai.request.model"] == "gemini-2.5-flash"
        assert attributes["gen_ai.provider.name"] == "test"
        assert attributes["gen_ai.usage.input_tokens"] == call.usage.input_tokens
        assert attributes["gen_ai.usage.output_tokens"] == call.usage.output_tokens
        assert attributes["llm.token_count.total"] == call.usage.total_tokens
        assert attributes["configurable_agents.cost_usd"] == pytest.approx(
            call.usage.input_tokens * FLASH_IN + call.usage.output_tokens * FLASH_OUT
        )
        assert json.loads(attributes["gen_ai.input.messages"])[0]["parts"][0]["type"] == "text"
    assert sum(a["gen_ai.usage.input_tokens"] for a in chats) == 62
    assert sum(a["gen_ai.usage.output_tokens"] for a in chats) == 19

    request = encode_spans(spans)  # what goes on the wire: every value encodes
    assert sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans) == 9


def test_tool_spans_and_a_failed_run():
    from opentelemetry.trace import StatusCode

    tools = ca.compile_workflow(ca.load_workflow(EXAMPLES / "calculator_tools.yaml"))
    result = ca.run_workflow(tools, {"question": "2+2"})
    ca.summarize_cost(result)
    spans = to_otel_spans(build_trace(tools, result, ids=SequentialIds()))
    calls = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert [s.name for s in calls] == ["calculator", "current_time"]
    solve = next(s for s in spans if s.name == "solve")
    for span in calls:
        assert span.parent is not None and span.parent.span_id == solve.context.span_id
        assert span.attributes["gen_ai.tool.name"] == span.name
    assert json.loads(calls[0].attributes["gen_ai.tool.call.arguments"]) == {"expression": "2 + 2"}
    assert calls[0].attributes["gen_ai.tool.call.result"] == "4"

    broken = workflow(FAILING)
    failed = ca.run_workflow(broken, {"topic": "x"})
    assert failed.status == "failed"
    spans = to_otel_spans(build_trace(broken, failed, ids=SequentialIds()))
    by_name = {s.name: s for s in spans}
    for name in ("workflow_retry_demo", "score", "validate_output"):
        span = by_name[name]
        assert span.status.status_code == StatusCode.ERROR, name
        assert [e.name for e in span.events] == ["exception"]
        assert span.attributes["error.type"]


def test_a_run_with_a_parent_is_in_the_callers_trace():
    compiled = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(compiled, {"topic": "bees"})
    trace = build_trace(compiled, result, ids=SequentialIds())
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    trace.parent = {
        "trace_id": caller_trace,
        "span_id": caller_span,
        "sampled": True,
        "tracestate": "vendor=abc",
    }
    spans = to_otel_spans(trace)
    assert {f"{s.context.trace_id:032x}" for s in spans} == {caller_trace}
    root = spans[0]
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == caller_span
    assert all(s.parent is not None and not s.parent.is_remote for s in spans[1:])
    assert {s.context.trace_state.to_header() for s in spans} == {"vendor=abc"}


# --------------------------------------------------------------------------- on the wire


def test_spans_arrive_with_the_tree_resource_headers_and_attributes(receiver):
    compiled = exporting(
        (EXAMPLES / "review_loop.yaml").read_text(),
        endpoint=receiver.url,
        headers={"x-team-token": "abc123"},
        service_name="review-service",
    )
    result = ca.run_workflow(compiled, {"topic": "bees"}, tags={"team": "search"})
    sink = otlp_sink(drained())
    assert (sink.exported, sink.sampled_out) == (1, 0)
    assert open_spool(spool_path()).pending() == 0  # delivered: gone from the spool

    assert receiver.headers[0]["x-team-token"] == "abc123"
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"
    spans = receiver.spans()
    assert tree(spans) == REVIEW_TREE
    assert receiver.trace_ids() == {result.run_id}
    for resource, _ in spans:
        names = {a.key: a.value.string_value for a in resource.attributes}
        assert names["service.name"] == "review-service"
    root = next(attrs(s) for _, s in spans if not s.parent_span_id)
    assert root["gen_ai.operation.name"] == "invoke_workflow"
    assert root["workflow.run_id"] == result.run_id
    assert root["configurable_agents.tag.team"] == "search"
    assert root["configurable_agents.cost_usd"] == pytest.approx(62 * FLASH_IN + 19 * FLASH_OUT)
    chats = [s for _, s in spans if s.name.startswith("chat ")]
    assert all(span.kind == span.SPAN_KIND_CLIENT for span in chats)
    assert sum(attrs(s)["gen_ai.usage.input_tokens"] for s in chats) == 62
    assert sum(attrs(s)["gen_ai.usage.output_tokens"] for s in chats) == 19


def test_sampling_rate_zero_sends_nothing_and_one_everything(receiver):
    none = exporting(endpoint=receiver.url, sampling_rate=0)
    for i in range(4):
        ca.run_workflow(none, {"topic": f"n{i}"}).raise_for_status()
    sink = otlp_sink(drained())
    assert receiver.requests == []
    assert (sink.exported, sink.sampled_out) == (0, 4)
    assert open_spool(spool_path()).pending() == 0  # dropped by the sampler: done

    every = exporting(endpoint=receiver.url, sampling_rate=1)
    runs = [ca.run_workflow(every, {"topic": f"a{i}"}) for i in range(4)]
    drainer = drained()
    assert receiver.trace_ids() == {r.run_id for r in runs}
    assert len(receiver.spans()) == 4 * 3  # workflow, node, model call per run
    assert otlp_sink(drainer).exported == 4


def _ratio_sampled(run_ids: list[str], rate: float) -> set[str]:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    sampler = TraceIdRatioBased(rate)
    decide = sampler.should_sample
    return {r for r in run_ids if decide(None, int(r, 16), "x").decision.is_sampled()}


def test_the_otel_traces_sampler_variables_unless_the_file_sets_a_rate(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    from_env = exporting(endpoint=receiver.url)
    runs = [ca.run_workflow(from_env, {"topic": f"s{i}"}).run_id for i in range(24)]
    sink = otlp_sink(drained())
    expected = _ratio_sampled(runs, 0.5)
    assert 0 < len(expected) < 24
    assert receiver.trace_ids() == expected
    assert (sink.exported, sink.sampled_out) == (len(expected), 24 - len(expected))

    receiver.requests.clear()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    from_file = exporting(endpoint=receiver.url, sampling_rate=1)
    runs = [ca.run_workflow(from_file, {"topic": f"f{i}"}).run_id for i in range(3)]
    drained()
    assert receiver.trace_ids() == set(runs)  # the file wins


def test_the_otlp_endpoint_and_headers_variables_unless_the_file_sets_them(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-env-token=from%20env,x-shared=env")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-service")
    first = ca.run_workflow(exporting(), {"topic": "env"})
    drained()
    assert receiver.trace_ids() == {first.run_id}
    assert receiver.headers[0]["x-env-token"] == "from env"
    resource = receiver.spans()[0][0]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == (
        "env-service"
    )

    other = OtlpReceiver()
    try:
        receiver.requests.clear()
        receiver.headers.clear()
        compiled = exporting(endpoint=other.url, headers={"x-shared": "file"})
        second = ca.run_workflow(compiled, {"topic": "file"})
        drained()
        assert receiver.requests == []  # the file's endpoint wins
        assert other.trace_ids() == {second.run_id}
        (headers,) = other.headers
        assert headers["x-shared"] == "file"  # and its headers: the variable's are not sent
        assert "x-env-token" not in headers
    finally:
        other.close()


def test_a_receiver_that_is_down_keeps_the_runs_until_it_is_up(monkeypatch):
    port = free_port()
    secret = "s3cret-token-value"
    compiled = exporting(
        endpoint=f"http://127.0.0.1:{port}/v1/traces",
        headers={"authorization": f"Bearer {secret}"},
        timeout_seconds=1,
    )
    runs = [ca.run_workflow(compiled, {"topic": f"d{i}"}).run_id for i in range(3)]
    spool = open_spool(spool_path())
    drainer = Drainer(spool)
    try:
        assert drainer.step(ignore_backoff=True) == 3  # one batch, written and failed
    finally:
        drainer.close()
    (state,) = spool.sinks()
    assert state.pending == 3
    assert "connection refused" in (state.last_error or "")
    assert secret not in (state.last_error or "")

    up = OtlpReceiver(port)
    try:
        drained()
        assert spool.pending() == 0
        assert sorted(span.trace_id.hex() for _, span in up.spans()) == sorted(runs * 3)
        assert up.headers[0]["authorization"] == f"Bearer {secret}"
        drained()  # nothing left: nothing is sent again
        assert len(up.spans()) == 3 * 3
    finally:
        up.close()


def test_a_hung_receiver_fails_the_batch_after_the_timeout(silent_port):
    compiled = exporting(endpoint=f"http://127.0.0.1:{silent_port}/v1/traces", timeout_seconds=1)
    for i in range(2):
        ca.run_workflow(compiled, {"topic": f"h{i}"})
    spool = open_spool(spool_path())
    drainer = Drainer(spool)
    try:
        assert drainer.step(ignore_backoff=True) == 2
    finally:
        drainer.close()
    (state,) = spool.sinks()
    assert state.pending == 2
    assert state.last_error == "OTLP export failed: no answer within 1 s"


def test_the_reason_is_kept_and_nothing_printed_where_otel_logging_is_off(monkeypatch, caplog):
    """The detached drainer turns ``opentelemetry`` logging down to CRITICAL; the reason of a
    failure is still the exporter's, and its log lines reach no handler."""
    otel_logger = logging.getLogger("opentelemetry")
    monkeypatch.setattr(otel_logger, "level", logging.CRITICAL)
    caplog.set_level(logging.DEBUG)
    compiled = exporting(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces", timeout_seconds=1)
    ca.run_workflow(compiled, {"topic": "x"})
    spool = open_spool(spool_path())
    drainer = Drainer(spool)
    try:
        drainer.step(ignore_backoff=True)
    finally:
        drainer.close()
    (state,) = spool.sinks()
    assert state.last_error == "OTLP export failed: connection refused"
    logging.getLogger(otlp.EXPORTER_LOGGERS[0]).error("from another exporter of this process")
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]

    monkeypatch.setattr(otel_logger, "level", logging.NOTSET)  # as usual: it is shown
    logging.getLogger(otlp.EXPORTER_LOGGERS[0]).error("from another exporter of this process")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == [
        "from another exporter of this process"
    ]


def test_an_error_answer_fails_only_the_runs_it_carried(receiver, monkeypatch):
    monkeypatch.setattr(otlp, "MAX_EXPORT_BATCH", 3)  # one run (3 spans) per request
    compiled = exporting(endpoint=receiver.url, timeout_seconds=5)
    runs = [ca.run_workflow(compiled, {"topic": f"e{i}"}).run_id for i in range(5)]
    receiver.statuses = [200]
    receiver.status = 400  # not retryable: the export fails at once
    spool = open_spool(spool_path())
    drainer = Drainer(spool)
    try:
        assert drainer.step(ignore_backoff=True) == 5
    finally:
        drainer.close()
    sink = otlp_sink(drainer)
    assert sink.exported == 1 and sink.exporter.calls == 2  # after a failure, no more tries
    (state,) = spool.sinks()
    assert state.pending == 4 and state.written == 1
    assert "HTTP 400 Bad Request" in (state.last_error or "")
    (first,) = receiver.trace_ids()

    receiver.status = 200
    drained()
    assert spool.pending() == 0
    assert sorted(span.trace_id.hex() for _, span in receiver.spans()) == sorted(runs * 3)
    assert first == runs[0]  # the oldest run went first


def test_a_batch_larger_than_the_processor_queue_is_sent_whole(receiver, monkeypatch):
    monkeypatch.setattr(otlp, "MAX_QUEUE", 4)
    monkeypatch.setattr(otlp, "MAX_EXPORT_BATCH", 4)
    compiled = exporting(endpoint=receiver.url)
    runs = [ca.run_workflow(compiled, {"topic": f"q{i}"}).run_id for i in range(5)]
    assert otlp_sink(drained()).exported == 5
    assert sorted(span.trace_id.hex() for _, span in receiver.spans()) == sorted(runs * 3)


def test_a_missing_exporter_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(MissingExtraError, match="opentelemetry-exporter-otlp-proto-http"):
        otlp.OtlpSink({"endpoint": "http://127.0.0.1:1/v1/traces", "rate": None})
    ca.run_workflow(exporting(endpoint="http://127.0.0.1:1/v1/traces"), {"topic": "x"})
    spool = open_spool(spool_path())
    drainer = Drainer(spool)
    try:
        drainer.step(ignore_backoff=True)
    finally:
        drainer.close()
    (state,) = spool.sinks()
    assert state.pending == 1
    assert "configurable-agents[server]" in (state.last_error or "")


def test_sampling_matches_the_sdk_for_random_trace_ids():
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(500)]
    compiled = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(compiled, {"topic": "bees"})
    for rate in (0.0, 0.3, 1.0):
        sink = otlp.OtlpSink({"endpoint": "http://127.0.0.1:1/v1/traces", "rate": rate})
        try:
            assert isinstance(sink.sampler, ParentBased)
            reference = TraceIdRatioBased(rate)
            for trace_id in ids:
                result.run_id = f"{trace_id:032x}"
                trace = build_trace(compiled, result)
                expected = reference.should_sample(None, trace_id, "x").decision.is_sampled()
                assert sink.sampled(trace) == expected
        finally:
            sink.close()


# --------------------------------------------------------------------------- traceparent


def test_a_served_run_continues_the_callers_trace(receiver, monkeypatch, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("prometheus_client")
    from fastapi.testclient import TestClient

    from configurable_agents.observe.metrics import recorder
    from configurable_agents.serve import create_app

    monkeypatch.setattr(recorder, "_metrics", recorder.Metrics())
    monkeypatch.setattr(recorder, "_enabled", False)
    monkeypatch.delenv("CONFIGURABLE_AGENTS_API_KEY", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = otel_yaml(endpoint=receiver.url).replace(
        "  observability:\n",
        f"  observability:\n    mlflow: {{enabled: true, tracking_uri: '{store}'}}\n",
        1,
    )
    path = tmp_path / "served.yaml"
    path.write_text(text, encoding="utf-8")
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with TestClient(create_app(path, database_url=f"sqlite:///{tmp_path / 'runs.db'}")) as client:
        answer = client.post(
            "/runs",
            json={"inputs": {"topic": "bees"}},
            headers={
                "traceparent": f"00-{caller_trace}-{caller_span}-01",
                "tracestate": "vendor=abc",
            },
        )
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["run_id"]
        unsampled = client.post(
            "/runs",
            json={"inputs": {"topic": "wasps"}},
            headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"},
        )
        assert unsampled.status_code == 200, unsampled.text
        drained()
        openapi = client.get("/openapi.json").json()

    spans = receiver.spans()
    assert receiver.trace_ids() == {caller_trace}  # the unsampled caller's run is not sent
    assert len(spans) == 3
    (root,) = [s for _, s in spans if s.name == "workflow_demo"]
    assert root.parent_span_id.hex() == caller_span
    assert root.trace_state == "vendor=abc"
    assert attrs(root)["workflow.run_id"] == run_id

    import mlflow

    found = mlflow.MlflowClient(store).get_trace(f"tr-{run_id}")
    assert found.info.trace_metadata["ca.parent_trace_id"] == caller_trace
    assert found.info.trace_metadata["ca.parent_span_id"] == caller_span
    assert found.info.tags["ca.parent_trace_id"] == caller_trace

    parameters = openapi["paths"]["/runs"]["post"]["parameters"]
    assert any(p["name"] == "traceparent" and p["in"] == "header" for p in parameters)


# --------------------------------------------------------------------------- detached


def test_the_detached_drainer_inherits_the_otel_variables(receiver, monkeypatch):
    """The drainer a run starts (not this process: nothing here drains) samples with the
    variables of the process that started it (the file's rate wins)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    dropped = ca.run_workflow(exporting(endpoint=receiver.url), {"topic": "off"})
    kept = ca.run_workflow(exporting(endpoint=receiver.url, sampling_rate=1), {"topic": "on"})
    spool = open_spool(spool_path())
    deadline = time.monotonic() + 120
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spool.pending() == 0
    assert receiver.trace_ids() == {kept.run_id}
    assert dropped.run_id not in receiver.trace_ids()
    assert drain._children or drain._started  # a detached drainer did it


# --------------------------------------------------------------------------- MLflow server


def test_round_trip_through_an_mlflow_server(mlflow_server):
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url)
    experiment = client.create_experiment(f"otel-{uuid.uuid4().hex[:8]}")
    # A generous timeout: the server's first OTLP request takes seconds (it loads on demand).
    compiled = exporting(
        (EXAMPLES / "review_loop.yaml").read_text(),
        endpoint=f"{mlflow_server.url}/v1/traces",
        headers={"x-mlflow-experiment-id": experiment},
        timeout_seconds=60,
    )
    result = ca.run_workflow(compiled, {"topic": "bees"}, tags={"team": "search"})
    assert otlp_sink(drained(120)).exported == 1

    trace = client.get_trace(f"tr-{result.run_id}")  # MLflow names an OTLP trace tr-<id>
    by_id = {s.span_id: s for s in trace.data.spans}
    spans = sorted(trace.data.spans, key=lambda s: (s.start_time_ns, s.span_id))
    assert [(s.name, by_id[s.parent_id].name if s.parent_id else None) for s in spans] == (
        REVIEW_TREE
    )
    assert trace.info.token_usage == {"input_tokens": 62, "output_tokens": 19, "total_tokens": 81}
    root = spans[0]
    assert root.get_attribute("workflow.run_id") == result.run_id
    assert root.get_attribute("configurable_agents.tag.team") == "search"
    chats = [s for s in spans if s.get_attribute("gen_ai.operation.name") == "chat"]
    assert sum(c.get_attribute("gen_ai.usage.input_tokens") for c in chats) == 62

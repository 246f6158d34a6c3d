"""A run whose ``warn`` judges run after it is spooled with a hold; the judged run then takes
the held record's place, so every sink gets one complete trace: judge spans, the judges'
tokens and cost in the trace's totals, ``node.quality_score`` on the judged span, the
feedback assessments, the OTLP spans and the Pushgateway's ``judge_score``. When the hold ran
out first (a drainer wrote the trace), the verdicts follow as assessments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import configurable_agents as ca
from configurable_agents.observe import judging
from configurable_agents.observe.dispatch import OBSERVER
from configurable_agents.observe.trace import drain as drain_module
from configurable_agents.observe.trace.drain import Drainer
from configurable_agents.observe.trace.spool import open_spool, spool_path

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {name: warned}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "tides follow the moon"}]
      final_ok: [{score: 2, rationale: "too short"}]
  observability:
OBSERVABILITY
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
judges:
  - {name: final_ok, instructions: "Rate {{ outputs }} from 1 to 5.", threshold: 4}
  - {name: gated, node: write, scorer: "gate_checks:gated"}
"""

GATE = """\
import threading

OPEN = threading.Event()


def gated(outputs):
    OPEN.wait(60)
    return True, "waited"
"""


def workflow(tmp_path: Path, observability: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "gate_checks.py").write_text(GATE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gate_checks", raising=False)  # a closed gate
    path = tmp_path / "warned.yaml"
    path.write_text(WORKFLOW.replace("OBSERVABILITY", observability))
    return path


def open_gate() -> None:
    import gate_checks  # type: ignore[import-not-found]

    gate_checks.OPEN.set()


def mlflow_settings(uri: str) -> str:
    return f"    mlflow: {{enabled: true, tracking_uri: {json.dumps(uri)}, experiment_name: w}}"


def test_the_judged_run_replaces_its_held_record(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = workflow(tmp_path, mlflow_settings(uri), monkeypatch)
    result = ca.run_workflow(path, {"topic": "tides"})
    spool = open_spool(spool_path())
    (state,) = [s for s in spool.sinks() if s.kind == "mlflow"]
    assert state.pending == 1 and state.due == 0  # held while the judges run
    open_gate()
    assert ca.flush(120) and result.trace_written
    assert spool.pending() == 0
    trace = mlflow.MlflowClient(uri).get_trace(result.trace_id)
    judges = sorted(s.name for s in trace.data.spans if s.span_type == "EVALUATOR")
    assert judges == ["judge final_ok", "judge gated"]
    root = next(s for s in trace.data.spans if s.parent_id is None)
    write = next(s for s in trace.data.spans if s.name == "write")
    assert root.attributes["node.quality_score"] == 0.25  # 2 of [1, 5]
    assert root.attributes["node.quality_passed"] is False
    assert write.attributes["node.quality_score"] == 1.0
    # the judge's call is counted in the trace's totals, apart from the nodes'
    judge_call = next(
        s for s in trace.data.spans if s.span_type == "CHAT_MODEL" and s.parent_id != write.span_id
    )
    node_call = next(s for s in trace.data.spans if s.parent_id == write.span_id)
    usage = json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])
    tokens = [
        s.attributes["mlflow.chat.tokenUsage"]["total_tokens"] for s in (judge_call, node_call)
    ]
    assert usage["total_tokens"] == sum(tokens)
    assert result.usage.total_tokens == tokens[1]  # the nodes' (judges apart)
    cost = ca.summarize_cost(result)
    assert cost.by_node["judge:final_ok"] > 0
    assessments = {a.name: a for a in trace.info.assessments}
    assert assessments["final_ok"].value == 2 and assessments["gated"].value is True
    assert float(assessments["cost_usd"].value) == pytest.approx(cost.total_usd)
    assert [
        t.info.trace_id
        for t in mlflow.MlflowClient(uri).search_traces(locations=[trace.info.experiment_id])
    ] == [result.trace_id]  # once


def test_a_hold_that_ran_out_gets_the_verdicts_as_assessments(tmp_path, monkeypatch):
    """A drainer took the record when its hold ran out (judges still running): the trace is
    written without judge spans and the verdicts follow as feedback assessments."""
    monkeypatch.setattr(judging, "JUDGE_HOLD", 0.2)
    monkeypatch.setattr(drain_module, "ensure_drained", lambda spool, sinks: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = workflow(tmp_path, mlflow_settings(uri), monkeypatch)
    result = ca.run_workflow(path, {"topic": "tides"})
    drainer = Drainer(open_spool(spool_path()))
    try:
        assert drainer.drain(60, ignore_backoff=False) == 0  # waits out the hold, writes
        client = mlflow.MlflowClient(uri)
        trace = client.get_trace(result.trace_id)
        assert not [s for s in trace.data.spans if s.span_type == "EVALUATOR"]
        open_gate()
        assert OBSERVER.judging.flush(60) and OBSERVER.redactor.flush(60)
        assert drainer.drain(60) == 0
    finally:
        drainer.close()
    trace = mlflow.MlflowClient(uri).get_trace(result.trace_id)
    names = [a.name for a in trace.info.assessments]
    assert names.count("final_ok") == 1 and names.count("gated") == 1
    assert not [s for s in trace.data.spans if s.span_type == "EVALUATOR"]


def test_otlp_gets_the_warn_judges_spans(tmp_path, monkeypatch):
    from observe.test_otel import OtlpReceiver, attrs

    receiver = OtlpReceiver()
    try:
        settings = f"    opentelemetry: {{enabled: true, endpoint: {json.dumps(receiver.url)}}}"
        path = workflow(tmp_path, settings, monkeypatch)
        open_gate()
        result = ca.run_workflow(path, {"topic": "tides"})
        assert ca.flush(60)
        drainer = Drainer(open_spool(spool_path()))
        try:
            assert drainer.drain(60) == 0
        finally:
            drainer.close()
        spans = {span.name: span for _, span in receiver.spans()}
    finally:
        receiver.close()
    assert receiver.trace_ids() == {result.run_id}
    assert {"judge final_ok", "judge gated"} <= set(spans)
    root = attrs(spans["workflow warned"]) if "workflow warned" in spans else None
    by_quality = [attrs(s).get("node.quality_score") for s in spans.values()]
    assert 0.25 in by_quality and 1.0 in by_quality, (root, list(spans))


def test_replace_takes_only_the_deliveries_no_drainer_holds(tmp_path):
    from configurable_agents.observe.trace.spool import FORMAT, SinkRef, Spool, SpoolRecord

    spool = Spool(tmp_path / "spool.db")
    a, b = SinkRef("mlflow", '{"a": 1}'), SinkRef("otlp", '{"b": 1}')
    old = spool.append(SpoolRecord(FORMAT, "run", {"v": 1}), [a, b], hold=60)
    assert [(s.pending, s.due) for s in spool.sinks()] == [(1, 0), (1, 0)]
    assert spool.claim(spool.sink_id(a), "x", 10) == []  # held
    (taken,) = spool.claim(spool.sink_id(a), "x", 10, ignore_backoff=True)  # a flush
    assert taken.record_id == old
    new, others = spool.replace(old, SpoolRecord(FORMAT, "run", {"v": 2}), [a, b])
    assert new is not None and new != old and others == [a]  # a is being written
    (entry,) = spool.claim(spool.sink_id(b), "y", 10)  # no hold on the new record
    assert entry.record_id == new
    spool.delivered(spool.sink_id(a), [old])
    spool.delivered(spool.sink_id(b), [new])
    assert spool.pending() == 0
    again = spool.append(SpoolRecord(FORMAT, "run", {"v": 3}), [a], hold=60)
    assert spool.replace(again, None, [a]) == (again, [])  # the hold lifted, nothing moved
    assert [s.due for s in spool.sinks() if s.kind == "mlflow"] == [1]
    spool.delivered(spool.sink_id(a), [again])
    assert spool.replace(again, None, [a]) == (None, [a])  # written already
    spool.close()

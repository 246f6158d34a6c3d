"""Judges in the trace: feedback assessments read back with ``mlflow.get_trace`` from SQLite,
PostgreSQL and an ``mlflow server``; judge spans, ``node.quality_score``,
``quality_assessment.json``; the ``judge_score`` histogram; our bulk rows equal MLflow's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.metrics import recorder as metrics
from servers import MlflowServer

mlflow = pytest.importorskip("mlflow")

JUDGED = """\
schema_version: "1.0"
flow: {name: judged}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "a draft about tides"}, {article: "tides follow the moon"}]
      on_topic: [{score: 2, rationale: "mention the moon"}, {score: 5, rationale: "on topic"}]
      safe: [{score: true, rationale: "nothing harmful"}]
      final_ok: [{score: 3, rationale: "fair"}]
  observability:
    mlflow: {enabled: true, tracking_uri: URI, experiment_name: judges}
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
  - name: on_topic
    node: write
    instructions: "Rate from 1 to 5 how well {{ outputs }} stays on {{ inputs }}."
    threshold: 4
    on_fail: retry
  - {name: safe, node: write, scorer: "mlflow:Safety"}
  - {name: final_ok, instructions: "Rate {{ outputs }} from 1 to 5.", threshold: 4}
"""


def run_judged(tmp_path: Path, uri: str) -> Any:
    path = tmp_path / "judged.yaml"
    path.write_text(JUDGED.replace("URI", json.dumps(uri)))
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(120)
    assert result.trace_written and result.trace_error is None, result.trace_error
    return result


def check_assessments(uri: str, trace_id: str) -> Any:
    client = mlflow.MlflowClient(uri)
    trace = client.get_trace(trace_id)
    found = {a.name: a for a in trace.info.assessments}
    assert {"on_topic", "safe", "final_ok", "cost_usd", "total_tokens"} <= set(found)
    on_topic = found["on_topic"]
    assert on_topic.value == 5 and on_topic.rationale == "on topic"  # the final attempt
    assert on_topic.source.source_type == "LLM_JUDGE"
    assert on_topic.source.source_id == "test:/gemini-2.5-flash"
    assert on_topic.metadata["passed"] == "true" and on_topic.metadata["attempt"] == "1"
    assert found["safe"].value is True and found["safe"].rationale == "nothing harmful"
    assert found["final_ok"].value == 3 and found["final_ok"].metadata["passed"] == "false"
    spans = {s.span_id: s for s in trace.data.spans}
    write = spans[on_topic.span_id]
    assert write.name == "write" and write.attributes["judge.on_topic.score"] == 5
    assert write.attributes["node.quality_score"] == 1.0  # on_topic (retry): 5 of [1, 5]
    assert write.attributes["node.quality_passed"] is True
    assert found["safe"].span_id == on_topic.span_id  # a warn judge of the same node
    root = spans[found["final_ok"].span_id]
    assert root.parent_id is None
    # warn judges (safe, final_ok) run after the run was spooled, while its record is held;
    # the judged run takes the record's place: one trace with every judge's span and score
    assert root.attributes["node.quality_score"] == 0.5  # final_ok: 3 of [1, 5]
    assert root.attributes["node.quality_passed"] is False
    assert write.attributes["judge.safe.score"] == 1
    judges = [s for s in trace.data.spans if s.span_type == "EVALUATOR"]
    assert sorted(s.name for s in judges) == [
        "judge final_ok",
        "judge on_topic",
        "judge on_topic",
        "judge safe",
    ]
    chats = [s for s in trace.data.spans if s.parent_id in {j.span_id for j in judges}]
    assert len(chats) == 4 and all(s.span_type == "CHAT_MODEL" for s in chats)
    ids = [a.assessment_id for a in trace.info.assessments]
    assert len(ids) == len(set(ids)) == 5
    return trace


def test_assessments_in_sqlite_and_the_quality_artifact(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_judged(tmp_path, uri)
    mlflow.set_tracking_uri(uri)
    trace = mlflow.get_trace(result.trace_id)
    assert {a.name for a in trace.info.assessments} >= {"on_topic", "safe", "final_ok"}
    check_assessments(uri, result.trace_id)
    location = trace.info.tags["mlflow.artifactLocation"]
    quality = json.loads((Path(location) / "quality_assessment.json").read_text())
    assert quality["workflow_name"] == "judged"
    assert quality["overall_quality"]["passed"] is False  # final_ok: 3 < 4
    rows = quality["node_assessments"]
    assert [(r["judge"], r["node_id"], r["final"]) for r in rows] == [
        ("on_topic", "write", False),
        ("on_topic", "write", True),
        ("safe", "write", True),
        ("final_ok", None, True),
    ]
    assert quality["recommendations"] == ["outputs: fair"]


def test_assessments_in_postgresql(tmp_path, postgres_tracking_uri):
    result = run_judged(tmp_path, postgres_tracking_uri)
    check_assessments(postgres_tracking_uri, result.trace_id)


def test_assessments_through_an_mlflow_server(tmp_path, mlflow_server: MlflowServer):
    result = run_judged(tmp_path, mlflow_server.url)
    check_assessments(mlflow_server.url, result.trace_id)
    check_assessments(mlflow_server.backend_uri, result.trace_id)
    from configurable_agents.observe.report.quality import quality_report

    report = quality_report(mlflow_server.url, experiment="judges")
    assert report.source == "search_traces"
    assert {(r.judge, r.runs) for r in report.rows} >= {("on_topic", 1), ("final_ok", 1)}


def test_our_assessment_rows_equal_mlflow_log_feedback(tmp_path):
    """The bulk writer's assessment rows are the rows ``mlflow.log_feedback`` writes."""
    import sqlite3

    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    result = run_judged(tmp_path, ours)
    theirs_db = tmp_path / "theirs.db"
    theirs = f"sqlite:///{theirs_db}"
    mlflow.set_tracking_uri(ours)
    trace = mlflow.get_trace(result.trace_id)
    client = mlflow.MlflowClient(theirs)
    experiment = client.create_experiment("judges")
    from mlflow.entities import TraceInfo, TraceLocation

    info = TraceInfo(
        trace_id=trace.info.trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment),
        request_time=trace.info.request_time,
        state=trace.info.state,
        execution_duration=trace.info.execution_duration,
    )
    client._tracing_client.start_trace(info)
    mlflow.set_tracking_uri(theirs)
    for a in trace.info.assessments:
        mlflow.log_feedback(
            trace_id=a.trace_id,
            name=a.name,
            value=a.value,
            source=a.source,
            rationale=a.rationale,
            metadata=a.metadata,
            span_id=a.span_id,
        )
    skip = {"assessment_id", "created_timestamp", "last_updated_timestamp", "experiment_id"}

    def rows(db: Path) -> list[dict[str, Any]]:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute("SELECT * FROM assessments ORDER BY name").fetchall()
        keys = [k for k in found[0].keys() if k not in skip]  # noqa: SIM118 - a Row
        return [{k: r[k] for k in keys} for r in found]

    assert rows(tmp_path / "ours.db") == rows(theirs_db)


def test_judge_score_histogram(tmp_path, monkeypatch):
    pytest.importorskip("prometheus_client")
    fresh = metrics.Metrics()
    monkeypatch.setattr(metrics, "_metrics", fresh)
    monkeypatch.setattr(metrics, "_enabled", True)
    path = tmp_path / "judged.yaml"
    path.write_text(JUDGED.replace("URI", json.dumps(f"sqlite:///{tmp_path / 'm.db'}")))
    ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(60)

    def sample(name: str, judge: str) -> float | None:
        return fresh.registry.get_sample_value(name, {"workflow": "judged", "judge": judge})

    assert sample("judge_score_count", "on_topic") == 2  # two attempts
    assert sample("judge_score_sum", "on_topic") == 7
    assert sample("judge_score_count", "final_ok") == 1  # a warn judge, after the run
    assert sample("judge_score_sum", "safe") == 1


def test_report_quality_on_known_data(tmp_path):
    """Three runs with known verdicts, on the SQL path (the covering index) and on the
    search_traces path: the same figures."""
    from configurable_agents.observe.report.quality import build_rows, quality_report, rest_counts
    from configurable_agents.observe.report.reports import make_filters

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "judged.yaml"
    text = JUDGED.replace("URI", json.dumps(uri))
    for i, final in enumerate((3, 4, 5)):
        path.write_text(text.replace("{score: 3, rationale", f"{{score: {final}, rationale"))
        ca.run_workflow(path, {"topic": f"t{i}"}).raise_for_status()
    assert ca.flush(60)
    report = quality_report(uri)
    assert report.source == "assessments"
    rows = {(r.judge, r.node): r for r in report.rows}
    assert set(rows) == {("on_topic", "write"), ("safe", "write"), ("final_ok", None)}
    on_topic = rows[("on_topic", "write")]
    assert (on_topic.runs, on_topic.pass_rate, on_topic.mean, on_topic.p10) == (3, 1.0, 5, 5)
    final = rows[("final_ok", None)]
    assert (final.runs, final.passed, final.mean, final.p10) == (3, 2, 4, 3)
    assert final.by_day == [
        {"day": final.by_day[0]["day"], "runs": 3, "pass_rate": 2 / 3, "mean": 4.0}
    ]
    assert rows[("safe", "write")].pass_rate == 1.0
    only = quality_report(uri, judge="final_ok")
    assert [r.judge for r in only.rows] == ["final_ok"]
    assert quality_report(uri, workflow="other").rows == []
    rest = build_rows(rest_counts(uri, make_filters(), None))
    assert [r.to_dict() for r in rest] == [r.to_dict() for r in report.rows]
    from configurable_agents.observe.report.store import REPORT_INDEXES

    assert "ca_report_judges" in REPORT_INDEXES
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "ca_report_judges" in indexes  # made by the writer on its first open


def test_report_quality_cli(tmp_path):
    from typer.testing import CliRunner

    from configurable_agents.cli.app import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_judged(tmp_path, uri)
    result = CliRunner().invoke(app, ["report", "quality", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    for part in ("on_topic", "final_ok", "(outputs)", "100%", "By day"):
        assert part in result.stdout
    result = CliRunner().invoke(
        app, ["report", "quality", "--tracking-uri", uri, "--judge", "safe", "--format", "json"]
    )
    data = json.loads(result.stdout)
    assert [j["judge"] for j in data["judges"]] == ["safe"]


def test_the_mlflow_ui_shows_the_judges(tmp_path):
    """bench/judge_screenshot.py (which made docs/screenshots/mlflow-ui-judges.png): an
    ``mlflow server`` on a judged trace, the assessments pane in headless Chromium."""
    import subprocess
    import sys

    from servers import CHROMIUM, skip_unless_ci

    if not CHROMIUM.is_file():
        skip_unless_ci(f"{CHROMIUM} not found (.ci/install-servers.sh)")
    root = Path(__file__).resolve().parents[2]
    out = root / "test-artifacts" / "mlflow-ui-judges.png"
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "judge_screenshot.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "Explains tides through the moon" in done.stdout and out.stat().st_size > 10_000

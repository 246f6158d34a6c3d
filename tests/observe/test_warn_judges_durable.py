"""Warn judges never cost a trace: the run is spooled before ``run_workflow`` returns and
their verdicts follow as an ``assessments`` spool record. A process SIGKILLed while a warn
judge runs keeps its trace (once, without that verdict); a retried assessments record adds
no duplicate; one whose trace is not in the store yet waits (failed, not rejected)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.run_record import spool_snapshot
from configurable_agents.observe.trace.assessments import KIND, assessment_id, record_data
from configurable_agents.observe.trace.drain import open_sink
from configurable_agents.observe.trace.spans import WorkflowInfo
from configurable_agents.observe.trace.spool import FORMAT, SpoolRecord
from servers import MlflowServer

from test_cli import TESTS, cli

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {name: slowjudge}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "tides follow the moon"}]
RESPONSES  observability:
    mlflow: {enabled: true, tracking_uri: URI, experiment_name: durable}
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
JUDGES"""

SLOW = """\
import os
import time


def slow(outputs):
    with open(os.environ["JUDGE_MARKER"], "w") as handle:
        handle.write("judging")
    time.sleep(600)
    return True


def quick(outputs):
    return True, "judged at once"
"""

SCRIPT = """\
import os
import sys
import time
import configurable_agents as ca

result = ca.run_workflow(sys.argv[1], {"topic": "tides"})
print(result.trace_id, flush=True)  # answered: the trace must survive from here on
if sys.argv[2] == "quick":  # the judge's verdict is spooled, then the process is killed
    from configurable_agents.observe.dispatch import OBSERVER

    OBSERVER.judging.flush(60)
    with open(os.environ["JUDGE_MARKER"], "w") as handle:
        handle.write("judged")
time.sleep(600)
"""


def write(tmp_path: Path, uri: str, judges: str, responses: str = "") -> Path:
    path = tmp_path / "slowjudge.yaml"
    text = WORKFLOW.replace("URI", json.dumps(uri)).replace("JUDGES", judges)
    path.write_text(text.replace("RESPONSES", responses))
    return path


def traces(uri: str) -> list[Any]:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name("durable")
    if found is None:
        return []
    return client.search_traces(locations=[found.experiment_id], max_results=100)


@pytest.mark.parametrize("judge", ["slow", "quick"])
def test_a_process_killed_while_a_warn_judge_runs_keeps_its_trace(tmp_path, judge):
    """``slow``: killed while the judge runs (trace kept, no verdict); ``quick``: killed once
    the verdict is spooled (trace and verdict, each once)."""
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    (tmp_path / "slow_checks.py").write_text(SLOW)
    path = write(tmp_path, uri, f'  - {{name: {judge}, scorer: "slow_checks:{judge}"}}\n')
    marker = tmp_path / "judging.marker"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    stderr = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), judge],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(TESTS), str(tmp_path), os.environ.get("PYTHONPATH")) if p
            ),
            "JUDGE_MARKER": str(marker),
        },
    )
    try:
        assert proc.stdout is not None
        trace_id = proc.stdout.readline().strip()
        assert trace_id.startswith("tr-"), (tmp_path / "stderr.txt").read_text()
        deadline = time.monotonic() + 60
        while not marker.exists():  # the judge has started (slow) or is spooled (quick)
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert cli("observability", "flush", "--timeout", "60").returncode == 0
    assert cli("observability", "flush", "--timeout", "60").returncode == 0
    found = [t.info.trace_id for t in traces(uri)]
    assert found == [trace_id]  # there, exactly once
    trace = mlflow.MlflowClient(uri).get_trace(trace_id)
    names = [a.name for a in trace.info.assessments]
    assert {"cost_usd", "total_tokens"} <= set(names)
    if judge == "slow":
        assert "slow" not in names  # never judged
    else:
        assert names.count("quick") == 1
        (verdict,) = [a for a in trace.info.assessments if a.name == "quick"]
        assert verdict.value is True and verdict.rationale == "judged at once"
    assert "write" in {s.name for s in trace.data.spans}


def judged(tmp_path: Path, uri: str) -> tuple[Any, Any]:
    judge = '  - {name: final_ok, instructions: "Rate {{ outputs }} 1-5.", scale: [1, 5]}\n'
    path = write(tmp_path, uri, judge, '      final_ok: [{score: 4, rationale: "fine"}]\n')
    compiled = ca.compile_workflow(ca.load_workflow(path))
    result = ca.run_workflow(compiled, {"topic": "tides"}).raise_for_status()
    assert ca.flush(120)
    assert result.trace_written
    return compiled, result


def assessments_record(compiled: Any, result: Any, trace_id: str | None = None) -> SpoolRecord:
    verdicts = [j for j in result.judges if j.on_fail == "warn"]
    data = record_data(WorkflowInfo.of(compiled), spool_snapshot(result), verdicts)
    if trace_id is not None:
        data["trace_id"] = trace_id
    return SpoolRecord(FORMAT, KIND, data)


def judge_assessments(uri: str, trace_id: str) -> list[Any]:
    trace = mlflow.MlflowClient(uri).get_trace(trace_id)
    return [a for a in trace.info.assessments if a.name == "final_ok"]


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_a_retried_assessments_record_writes_no_duplicate(tmp_path, store, request):
    if store == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        uri = server.url
    else:
        uri = f"sqlite:///{tmp_path / 'retry.db'}"
    compiled, result = judged(tmp_path, uri)
    (first,) = judge_assessments(uri, result.trace_id)  # the normal path: trace + verdict
    assert first.value == 4 and first.rationale == "fine"
    assert first.assessment_id == assessment_id(result.run_id, "final_ok", None, None)
    sink = open_sink("mlflow", {"uri": uri, "exp": "durable"})
    try:
        sink.open()
        assert sink.fast is (store == "sqlite")
        record = assessments_record(compiled, result)
        for _ in range(2):  # a drainer that wrote it and died before deleting it, twice
            written = sink.write([(7, record)])
            assert written.delivered == [7] and not written.failed and not written.rejected
        (again,) = judge_assessments(uri, result.trace_id)
        assert again.assessment_id == first.assessment_id
        # A trace not in the store yet: retried later, never rejected.
        absent = assessments_record(compiled, result, "tr-" + "0" * 31 + "1")
        written = sink.write([(8, absent)])
        assert list(written.failed) == [8] and not written.rejected and not written.delivered
        assert "not in the store yet" in written.failed[8]
    finally:
        sink.close()


def test_an_older_drainer_sets_an_assessments_record_aside(tmp_path):
    """A drainer of the previous version writes every record as a run: an ``assessments``
    record is rejected (never a crash), retried, then set aside; the trace is untouched."""
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    compiled, result = judged(tmp_path, uri)
    sink = open_sink("mlflow", {"uri": uri, "exp": "durable"})
    try:
        sink.open()
        from configurable_agents.observe.trace.drain import WriteResult

        written = WriteResult()
        sink._write_runs([(9, assessments_record(compiled, result))], written)  # the old write
        assert list(written.rejected) == [9] and "KeyError" in written.rejected[9]
    finally:
        sink.close()

"""retention_days: traces (with artifacts, assessments, spool entries) and server run records
older than N days are deleted, per experiment; on SQLite and PostgreSQL, with backdated traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca

mlflow = pytest.importorskip("mlflow")
sa = pytest.importorskip("sqlalchemy")

WF = """\
schema_version: "1.0"
flow: {{name: kept}}
config:
  llm: {{provider: test, model: gpt-4o-mini}}
  observability:
    mlflow:
      enabled: true
      tracking_uri: "{uri}"
      experiment_name: "retention_{{tenant}}"
      artifact_level: full
      retention_days: 7
state:
  fields:
    topic: {{type: str, required: true}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
    prompt: "Write about {{topic}}."
    outputs: [article]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""
DAY_MS = 86_400_000


def traced_runs(path: Path, count: int, tenant: str) -> list[Any]:
    compiled = ca.compile_workflow(ca.load_workflow(path))
    results = [
        ca.run_workflow(compiled, {"topic": f"t{i}"}, tags={"tenant": tenant}) for i in range(count)
    ]
    assert ca.flush(120)
    assert all(r.trace_written for r in results), [r.trace_error for r in results]
    return results


def backdate(uri: str, trace_ids: list[str], days: int) -> None:
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        for trace_id in trace_ids:
            conn.execute(
                sa.text(
                    "UPDATE trace_info SET timestamp_ms = timestamp_ms - :shift "
                    "WHERE request_id = :id"
                ),
                {"shift": days * DAY_MS, "id": trace_id},
            )
    engine.dispose()


def count(uri: str, table: str, where: str = "") -> int:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} {where}")).scalar()
    engine.dispose()
    return int(value or 0)


def check_retention(uri: str, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(WF.format(uri=uri), encoding="utf-8")
    acme = traced_runs(path, 3, "acme")
    globex = traced_runs(path, 2, "globex")
    client = mlflow.MlflowClient(uri)
    names = {e.name for e in client.search_experiments()}
    assert {"retention_acme", "retention_globex"} <= names  # {tenant} in experiment_name
    old = [acme[0].trace_id, acme[1].trace_id, globex[0].trace_id]
    backdate(uri, old, 8)
    artifact_dirs = {
        r.trace_id: client.get_trace(r.trace_id).info.tags["mlflow.artifactLocation"]
        for r in acme + globex
    }
    assessments_before = count(uri, "assessments")
    assert assessments_before >= 5

    from configurable_agents.config import load_workflow
    from configurable_agents.serve.retention import apply_retention

    loaded = load_workflow(path)
    dry = apply_retention(loaded, dry_run=True)
    assert dry.traces == {"retention_acme": 2, "retention_globex": 1}
    assert count(uri, "trace_info") == 5  # nothing deleted

    done = apply_retention(loaded)
    assert done.traces == {"retention_acme": 2, "retention_globex": 1}
    assert done.artifacts == 3
    remaining = {r[0] for r in _ids(uri)}
    assert remaining == {acme[2].trace_id, globex[1].trace_id}
    assert count(uri, "assessments") < assessments_before
    orphans = count(uri, "assessments", "WHERE trace_id NOT IN (SELECT request_id FROM trace_info)")
    assert orphans == 0
    for trace_id, location in artifact_dirs.items():
        local = Path(location.removeprefix("file://"))
        if local.is_absolute():
            assert local.exists() == (trace_id in remaining), trace_id
    # the cost report (the rollup) agrees with the traces that remain
    from configurable_agents.observe.report.reports import cost_report

    assert cost_report(uri).runs == 2


def _ids(uri: str) -> list[Any]:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT request_id FROM trace_info")).fetchall()
    engine.dispose()
    return list(rows)


def test_retention_on_sqlite(tmp_path):
    check_retention(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def test_retention_on_postgresql(postgres_tracking_uri, tmp_path):
    check_retention(postgres_tracking_uri, tmp_path)


def test_retention_deletes_old_spool_records_and_run_records(tmp_path, monkeypatch):
    from configurable_agents.config import load_workflow
    from configurable_agents.observe.trace import drain
    from configurable_agents.observe.trace.spool import open_spool, spool_path
    from configurable_agents.serve.records import RunStore
    from configurable_agents.serve.retention import apply_retention
    from configurable_agents.serve.tables import utcnow

    # traces that wait in the spool (no drainer), two of them old
    monkeypatch.setattr(drain, "ensure_drained", lambda spool, sinks: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "wf.yaml"
    path.write_text(WF.format(uri=uri), encoding="utf-8")
    compiled = ca.compile_workflow(ca.load_workflow(path))
    for i in range(3):
        ca.run_workflow(compiled, {"topic": f"t{i}"}, tags={"tenant": "acme"})
    spool = open_spool(spool_path())
    with spool._tx() as db:
        ids = [r[0] for r in db.execute("SELECT id FROM records ORDER BY id")]
        db.execute(
            "UPDATE records SET created = created - ? WHERE id IN (?, ?)", (8 * 86400, *ids[:2])
        )
    # server run records, one old
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = RunStore(url, "kept")
    store.open()
    from datetime import timedelta

    old = {
        "id": "a" * 32,
        "workflow": "kept",
        "workflow_version": "1",
        "status": "succeeded",
        "inputs": {},
        "tags": {},
        "created_at": utcnow() - timedelta(days=9),
    }
    new = {**old, "id": "b" * 32, "created_at": utcnow()}
    running = {**old, "id": "c" * 32, "status": "running"}
    for record in (old, new, running):
        store.save(record)
    store.close()

    result = apply_retention(load_workflow(path), database_url=url)
    assert result.spool_records == 2 and result.run_records == 1
    assert open_spool(spool_path()).pending() == 1
    store = RunStore(url, "kept")
    assert store.get("a" * 32) is None and store.get("b" * 32) is not None
    assert store.get("c" * 32) is not None  # in flight: kept
    store.engine.dispose()


def test_cli_retention_apply_prints_what_it_deleted(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "wf.yaml"
    path.write_text(WF.format(uri=uri), encoding="utf-8")
    results = traced_runs(path, 2, "acme")
    backdate(uri, [results[0].trace_id], 30)
    env = {**os.environ, "COLUMNS": "200"}
    cli = [sys.executable, "-m", "configurable_agents", "retention", "apply", str(path)]
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 trace(s) in experiment 'retention_acme'" in dry.stdout
    out = subprocess.run([*cli, "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["traces"] == {"retention_acme": 1}
    missing = tmp_path / "none.yaml"
    missing.write_text(WF.format(uri=uri).replace("      retention_days: 7\n", ""))
    bad = subprocess.run(
        [sys.executable, "-m", "configurable_agents", "retention", "apply", str(missing)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "retention_days" in bad.stderr


def test_a_cli_run_applies_retention_at_most_once_a_day(tmp_path):
    from configurable_agents.cli.retention import _stamp, maybe_apply_in_background
    from configurable_agents.config import load_workflow

    path = tmp_path / "wf.yaml"
    path.write_text(WF.format(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), encoding="utf-8")
    loaded = load_workflow(path)
    assert maybe_apply_in_background(loaded) is True
    assert maybe_apply_in_background(loaded) is False  # once a day
    stamp = _stamp(loaded.file)
    old = time.time() - 2 * 86400
    os.utime(stamp, (old, old))
    assert maybe_apply_in_background(loaded) is True

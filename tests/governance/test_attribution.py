"""Attribution: --tag on run, X-User/X-Team/X-Tenant headers on the server, {tenant} in
experiment_name, report costs --by user|team|tenant|cost_center and its filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import configurable_agents as ca

pytest.importorskip("mlflow")

WF = """\
schema_version: "1.0"
flow: {{name: attributed}}
config:
  llm: {{provider: test, model: gpt-4o-mini}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "sqlite:///{store}", experiment_name: "{experiment}"}}
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


def workflow(tmp_path: Path, experiment: str = "attribution") -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(WF.format(store=tmp_path / "mlflow.db", experiment=experiment))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configurable_agents", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


def test_report_costs_by_tag_and_filters(tmp_path):
    from configurable_agents.observe.report.reports import cost_report

    compiled = ca.compile_workflow(ca.load_workflow(workflow(tmp_path)))
    runs = [("ana", "search", "acme"), ("ana", "search", "acme"), ("bob", "ads", "globex")]
    results = [
        ca.run_workflow(compiled, {"topic": "tides"}, tags={"user": u, "team": t, "tenant": n})
        for u, t, n in runs
    ]
    ca.run_workflow(compiled, {"topic": "tides"})  # untagged
    assert ca.flush(60)
    one = results[0].cost.total_usd if results[0].cost else None
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = cost_report(uri, by="user")
    by = {r["value"]: r for r in report.by_tag or []}
    assert {k: v["runs"] for k, v in by.items()} == {"ana": 2, "bob": 1, "(none)": 1}
    assert sum(r["total_cost"] for r in by.values()) == pytest.approx(report.total_cost)
    acme = cost_report(uri, tags={"tenant": "acme"})
    assert acme.runs == 2
    if one is not None:
        assert acme.total_cost == pytest.approx(2 * one)
    assert cost_report(uri, tags={"tenant": "acme", "user": "bob"}).runs == 0

    out = cli("report", "costs", "--tracking-uri", uri, "--by", "team", "--tenant", "globex")
    assert out.returncode == 0, out.stderr
    assert "Cost by team" in out.stdout and "ads" in out.stdout and "search" not in out.stdout
    out = cli("report", "costs", "--tracking-uri", uri, "--by", "tenant", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {r["value"] for r in data["by_tag"]} == {"acme", "globex", "(none)"}


def test_cli_tag_pairs_and_tenant_experiments(tmp_path):
    path = workflow(tmp_path, "costs_{tenant}")
    out = cli("run", str(path), "-i", "topic=x", "--tag", "user=ana team=search tenant=acme")
    assert out.returncode == 0, out.stderr
    out = cli("run", str(path), "-i", "topic=x", "-t", "tenant=globex", "-t", "user=bob")
    assert out.returncode == 0, out.stderr
    out = cli("run", str(path), "-i", "topic=x")
    assert out.returncode == 0, out.stderr
    # the detached drainer writes the traces: flush waits for it (the sink's lock), so the
    # store is not created by two processes at once
    out = cli("observability", "flush", "--workflow", str(path), "--timeout", "120")
    assert out.returncode == 0, out.stderr
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names = {e.name for e in mlflow.MlflowClient(uri).search_experiments()}
    assert {"costs_acme", "costs_globex", "costs_default"} <= names
    from configurable_agents.observe.report.reports import cost_report

    report = cost_report(uri, experiment="costs_acme", by="user")
    assert [r["value"] for r in report.by_tag or []] == ["ana"]
    out = cli(
        "report",
        "costs",
        "--tracking-uri",
        uri,
        "--experiment",
        "costs_acme",
        "--by",
        "user",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    assert [r["value"] for r in json.loads(out.stdout)["by_tag"]] == ["ana"]


def test_server_attribution_headers(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from configurable_agents.serve import create_app

    app = create_app(workflow(tmp_path), database_url=f"sqlite:///{tmp_path / 'runs.db'}")
    with TestClient(app) as client:
        answer = client.post(
            "/runs",
            json={"inputs": {"topic": "x"}, "tags": {"team": "body-wins"}},
            headers={
                "X-User": "ana",
                "X-Team": "search",
                "X-Tenant": "acme",
                "X-Cost-Center": "cc-42",
            },
        )
        assert answer.status_code == 200, answer.text
        record = client.get(f"/runs/{answer.json()['id']}").json()
        paths = client.get("/openapi.json").json()["paths"]
    documented = {p["name"] for p in paths["/runs"]["post"]["parameters"] if p["in"] == "header"}
    # the headers POST /runs reads, documented; GET /runs reads none, so it lists none
    assert documented == {"x-user", "x-team", "x-tenant", "x-cost-center"} | {
        "traceparent",
        "tracestate",
    }
    assert all(p["in"] == "query" for p in paths["/runs"]["get"]["parameters"])
    assert record["tags"] == {
        "user": "ana",
        "team": "body-wins",
        "tenant": "acme",
        "cost_center": "cc-42",
    }
    assert ca.flush(60)
    from configurable_agents.observe.report.reports import cost_report

    report = cost_report(f"sqlite:///{tmp_path / 'mlflow.db'}", by="cost_center")
    assert [r["value"] for r in report.by_tag or []] == ["cc-42"]

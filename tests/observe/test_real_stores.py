"""Our traces in the stores users run: PostgreSQL, and an MLflow server over HTTP (with its
UI in headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from servers import MissingServerBinary, MlflowServer, chromium_dump_dom, skip_unless_ci

from conftest import EXAMPLES

mlflow = pytest.importorskip("mlflow")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLASH_IN, FLASH_OUT = 0.30e-6, 2.50e-6


def run_traced(uri: str, experiment: str, **kwargs: Any) -> Any:
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    config = workflow.workflow.spec.config.observability.mlflow
    config.enabled = True
    config.tracking_uri = uri
    config.experiment_name = experiment
    result = ca.run_workflow(workflow, {"topic": "bees"}, **kwargs)
    assert ca.flush(120)
    assert result.trace_error is None and result.trace_written, result.trace_error
    return result


def check_trace(uri: str, trace_id: str) -> Any:
    trace = mlflow.MlflowClient(uri).get_trace(trace_id)
    names = [s.name for s in sorted(trace.data.spans, key=lambda s: s.start_time_ns)]
    assert names[:3] == ["workflow_review_loop", "write", "chat gemini-2.5-flash"]
    assert len(names) == 9
    assert trace.info.token_usage["total_tokens"] == 81
    cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"]
    assert cost == pytest.approx(62 * FLASH_IN + 19 * FLASH_OUT)
    assert {a.name for a in trace.info.assessments} == {"cost_usd", "total_tokens"}
    return trace


def test_traces_land_in_postgresql(postgres_tracking_uri: str) -> None:
    result = run_traced(postgres_tracking_uri, "pg", tags={"team": "search"})
    trace = check_trace(postgres_tracking_uri, result.trace_id)
    assert trace.info.tags["team"] == "search"
    assert trace.info.tags["mlflow.artifactLocation"]


def test_traces_go_to_a_tracking_server_over_http(mlflow_server: MlflowServer) -> None:
    result = run_traced(mlflow_server.url, "over-http")
    trace = check_trace(mlflow_server.url, result.trace_id)
    # The server stored it in its own backend store.
    backend = mlflow.MlflowClient(mlflow_server.backend_uri).get_trace(result.trace_id)
    assert backend.info.trace_id == trace.info.trace_id


def test_the_mlflow_ui_shows_our_trace(mlflow_server: MlflowServer) -> None:
    result = run_traced(mlflow_server.url, "ui")
    experiment = mlflow.MlflowClient(mlflow_server.url).get_experiment_by_name("ui")
    page = f"{mlflow_server.url}/#/experiments/{experiment.experiment_id}/traces"
    try:
        listing = chromium_dump_dom(page, ARTIFACTS / "mlflow-ui-our-traces.png")
        detail = chromium_dump_dom(
            f"{page}?traceId={result.trace_id}", ARTIFACTS / "mlflow-ui-our-trace.png"
        )
    except MissingServerBinary as exc:
        skip_unless_ci(str(exc))
    assert f"Select trace {result.trace_id}" in listing, listing[-2000:]
    assert "bees" in listing
    for span in ("workflow_review_loop", "chat gemini-2.5-flash", "review"):
        assert span in detail, span

"""The real-server fixtures work: PostgreSQL, MLflow on PostgreSQL, the MLflow UI in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from servers import MissingServerBinary, MlflowServer, chromium_dump_dom, skip_unless_ci

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# MLflow's first span imports mlflow.pyfunc, which warns (UserWarning, in ANSI colour) about
# an ``Any`` type hint in its own types. Under ``filterwarnings = error`` that warning is
# raised inside ``start_span``, which MLflow catches, returning a no-op span: no trace at all.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:.*Any type hint is inferred as AnyType:UserWarning"
)


@pytest.fixture
def mlflow_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` after the test."""
    try:
        import mlflow
        from mlflow.tracking import fluent
    except ImportError:
        skip_unless_ci("mlflow is not installed (the 'mlflow' extra)")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    yield
    mlflow.flush_trace_async_logging()
    # None is accepted (it unsets the URI); it also resets the tracer provider.
    mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


def log_demo_trace(experiment: str) -> tuple[str, str]:
    """Log one WORKFLOW span to ``experiment``; return (experiment id, trace id)."""
    import mlflow

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    with mlflow.start_span("workflow_demo", span_type="WORKFLOW") as span:
        span.set_inputs({"topic": "tide pools"})
        span.set_outputs({"article": "Tide pools are..."})
    mlflow.flush_trace_async_logging()
    return experiment_id, span.trace_id


def test_postgres_serves_select_one(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            version = conn.execute(sa.text("show server_version_num")).scalar_one()
            assert int(version) >= 150000
    finally:
        engine.dispose()


def test_fresh_database_per_test(postgres_url: str, postgres_tracking_uri: str) -> None:
    assert postgres_tracking_uri != postgres_url
    engine = sa.create_engine(postgres_tracking_uri)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "select count(*) from information_schema.tables where table_schema='public'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0


def test_mlflow_migrates_and_traces_on_postgres(
    postgres_tracking_uri: str, mlflow_globals: None
) -> None:
    import mlflow

    mlflow.set_tracking_uri(postgres_tracking_uri)
    experiment_id, trace_id = log_demo_trace("pg-check")

    traces = mlflow.search_traces(locations=[experiment_id], return_type="list")
    assert [trace.info.trace_id for trace in traces] == [trace_id]
    assert [span.name for span in traces[0].data.spans] == ["workflow_demo"]


def test_mlflow_ui_lists_the_trace(mlflow_server: MlflowServer, mlflow_globals: None) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.url)
    experiment_id, trace_id = log_demo_trace("ui-check")
    assert mlflow_server.pid > 0
    assert mlflow_server.backend_uri.startswith("sqlite:///")

    traces_page = f"{mlflow_server.url}/#/experiments/{experiment_id}/traces"
    try:
        listing = chromium_dump_dom(traces_page, ARTIFACTS / "mlflow-ui-traces.png")
        # The list's default columns show inputs, not names; opening the trace shows its spans.
        detail = chromium_dump_dom(
            f"{traces_page}?traceId={trace_id}", ARTIFACTS / "mlflow-ui-trace.png"
        )
    except MissingServerBinary as exc:
        skip_unless_ci(str(exc))

    assert f"Select trace {trace_id}" in listing, listing[-2000:]
    assert "tide pools" in listing
    assert "workflow_demo" in detail, detail[-2000:]

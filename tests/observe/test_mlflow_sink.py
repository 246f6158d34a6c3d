"""The batched MLflow writer writes exactly the rows MLflow's own client writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.trace.mlflow_sink import KNOWN_REVISIONS, MlflowSink
from configurable_agents.observe.trace.spool import open_spool, spool_path

from conftest import EXAMPLES, RETRY

mlflow = pytest.importorskip("mlflow")

# Columns that differ between two stores for the same traces by design.
VOLATILE = {"assessment_id", "created_timestamp", "last_updated_timestamp"}


def spooled_records(paths: list[Path], inputs: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Run each workflow (traced) and take its spool record back without writing it (no
    drainer starts: one that tried the unreachable store would lease or back off records)."""
    from configurable_agents.observe.trace import drain

    started = drain.ensure_drained
    drain.ensure_drained = lambda spool, sinks: None  # type: ignore[assignment]
    try:
        for path, given in zip(paths, inputs, strict=True):
            workflow = ca.compile_workflow(ca.load_workflow(path))
            config = workflow.workflow.spec.config.observability.mlflow
            config.enabled = True
            config.tracking_uri = "http://127.0.0.1:1"  # never written: only the records
            ca.run_workflow(workflow, given)
    finally:
        drain.ensure_drained = started  # type: ignore[assignment]
    spool = open_spool(spool_path())
    (state,) = spool.sinks()
    entries = spool.claim(state.id, "test", 100, ignore_backoff=True)
    return [(e.record_id, e.load()) for e in entries]


def rows(db: Path, table: str, order: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        found = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY {order}")]
    for row in found:
        for key in VOLATILE & row.keys():
            row[key] = None
        if row.get("key") == "mlflow.artifactLocation":
            row["value"] = Path(row["value"]).name  # each store has its own artifact root
    return found


# A node gated by two judges (an LLM judge that asks for a retry, a code scorer), run in
# the run: their feedback assessments go with the trace.
JUDGED = (
    RETRY.replace("flow: {name: retry_demo}", "flow: {name: judged_demo}").replace(
        "      score: [",
        '      on_topic: [{score: 1, rationale: "low"}, {score: 5, rationale: "ok"}]\n'
        "      score: [",
    )
    + """\
judges:
  - {name: on_topic, node: score, instructions: "Rate {{ outputs }}", on_fail: retry}
  - {name: positive, node: score, scorer: "sample_tools:positive", on_fail: block}
"""
)


def test_batched_rows_equal_mlflow_clients_rows(tmp_path, write_workflow):
    records = spooled_records(
        [
            EXAMPLES / "review_loop.yaml",
            write_workflow(RETRY),
            EXAMPLES / "calculator_tools.yaml",
            write_workflow(JUDGED, "judged.yaml"),
        ],
        [{"topic": "bees"}, {"topic": "x"}, {"question": "What is 2 + 3?"}, {"topic": "y"}],
    )
    assert len(records) == 4
    assert len(records[3][1].data["result"].judges) == 3  # on_topic twice (a retry), positive
    stores = {}
    for fast in (True, False):
        db = tmp_path / f"{'fast' if fast else 'client'}.db"
        sink = MlflowSink(f"sqlite:///{db}", "golden")
        sink.open()
        assert sink.fast  # a known revision
        sink.fast = fast
        assert len(sink.write(records).delivered) == 4
        sink.close()
        stores[fast] = db
    for table, order in (
        ("trace_info", "request_id"),
        ("trace_tags", "request_id, key"),
        ("trace_request_metadata", "request_id, key"),
        ("assessments", "trace_id, name"),
        ("spans", "trace_id, span_id"),
        ("span_metrics", "trace_id, span_id, key"),
        ("trace_metrics", "request_id, key"),
    ):
        assert rows(stores[True], table, order) == rows(stores[False], table, order), table


PROMPTED = """\
schema_version: "1.0"
flow: {name: prompted}
config:
  llm: {provider: test, model: gemini-2.5-flash, responses: {write: [{text: "ok"}]}}
  observability: {mlflow: {tracking_uri: "REGISTRY"}}
state: {fields: {topic: {type: str}, text: {type: str}}}
nodes:
  - {id: write, prompt_ref: {name: golden_prompt, version: 1}, outputs: [text]}
edges: [{from: START, to: write}, {from: write, to: END}]
"""


def test_prompt_links_equal_what_mlflows_client_links(tmp_path, write_workflow, monkeypatch):
    """A run on a registry prompt: our bulk rows (the ``mlflow.linkedPrompts`` tag and the
    trace -> prompt-version ``entity_associations`` row) equal what
    ``MlflowClient.link_prompt_versions_to_trace`` writes for the same trace."""
    from configurable_agents.observe.trace import mlflow_entities
    from configurable_agents.prompts import clear_cache

    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    mlflow.MlflowClient(registry, registry_uri=registry).register_prompt(
        "golden_prompt", "Write about {{ topic }}."
    )
    clear_cache()
    path = write_workflow(PROMPTED.replace("REGISTRY", registry), "prompted.yaml")
    records = spooled_records([path], [{"topic": "bees"}])
    (result,) = [r.data["result"] for _, r in records]
    assert result.nodes[0].prompt_version == "golden_prompt/1"
    fast_db, client_db = tmp_path / "fast.db", tmp_path / "client.db"
    sink = MlflowSink(f"sqlite:///{fast_db}", "golden")
    assert len(sink.write(records).delivered) == 1 and sink.fast
    sink.close()
    # MLflow's way: the trace written without our link, then linked by MLflow's client.
    uri = f"sqlite:///{client_db}"
    with monkeypatch.context() as patch:
        patch.setattr(mlflow_entities, "linked_prompts", lambda result: [])
        sink = MlflowSink(uri, "golden")
        sink.open()
        sink.fast = False
        assert len(sink.write(records).delivered) == 1
        sink.close()
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.register_prompt("golden_prompt", "Write about {{ topic }}.")
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    client.link_prompt_versions_to_trace([version], f"tr-{result.run_id}")
    for table, order in (
        ("trace_tags", "request_id, key"),
        ("entity_associations", "source_id, destination_id"),
        ("spans", "trace_id, span_id"),  # node.prompt_version, mlflow.linkedPrompts
    ):
        ours, theirs = rows(fast_db, table, order), rows(client_db, table, order)
        for row in ours + theirs:
            row.pop("association_id", None), row.pop("created_time", None)
        assert ours == theirs, table
    spans = {r["name"]: r["content"] for r in rows(fast_db, "spans", "span_id")}
    assert '"node.prompt_version": "\\"golden_prompt/1\\""' in spans["write"]
    linked = rows(fast_db, "entity_associations", "source_id")
    assert [(r["source_type"], r["destination_id"]) for r in linked] == [
        ("trace", "golden_prompt/1")
    ]


def test_an_unknown_schema_revision_falls_back_to_the_client(tmp_path, caplog):
    db = tmp_path / "future.db"
    uri = f"sqlite:///{db}"
    MlflowSink(uri, "future").open()  # create the store
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    sink = MlflowSink(uri, "future")
    with caplog.at_level("WARNING", logger="configurable_agents.observe"):
        sink.open()
    assert not sink.fast
    assert "f00dfeedbeef" in caplog.text and "one at a time" in caplog.text
    assert "dc11669786a5" in KNOWN_REVISIONS


def test_artifacts_go_next_to_the_sqlite_store_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a server started from another directory, say
    store = tmp_path / "stores" / "mlflow.db"
    records = spooled_records([EXAMPLES / "review_loop.yaml"], [{"topic": "bees"}])
    sink = MlflowSink(f"sqlite:///{store}", "placed")
    sink.open()
    assert Path(sink.artifact_root) == store.parent / "mlruns" / sink.experiment_id
    assert len(sink.write(records).delivered) == 1
    sink.close()
    (trace,) = (store.parent / "mlruns" / sink.experiment_id / "traces").iterdir()
    assert (trace / "artifacts" / "cost_summary.json").is_file()
    assert not (elsewhere / "mlruns").exists()
    # MLflow's own client reads the same location back from the store
    from mlflow.tracking import MlflowClient

    found = MlflowClient(f"sqlite:///{store}").get_experiment_by_name("placed")
    assert Path(found.artifact_location) == store.parent / "mlruns" / sink.experiment_id

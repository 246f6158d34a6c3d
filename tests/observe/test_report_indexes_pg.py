"""The indexes of ``report quality`` and ``report prompts`` (``report.indexes``): made by the
trace writer's first write to a real PostgreSQL and to SQLite, used by the reports' own
queries (the plans are read back), rebuilt on SQLite when their definition changed; and the
day of a verdict on PostgreSQL (integer division, not a rounding cast)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.report import indexes
from configurable_agents.observe.report.prompts import prompt_report
from configurable_agents.observe.report.quality import quality_report
from configurable_agents.observe.report.sql import ensure_report_indexes
from configurable_agents.prompts import clear_cache

from .test_judge_traces import JUDGED

mlflow = pytest.importorskip("mlflow")
sa = pytest.importorskip("sqlalchemy")

DAY_MS = 86_400_000
EVENING = 19_723 * DAY_MS + 18 * 3_600_000  # 2024-01-01 18:00 UTC


@pytest.fixture(autouse=True)
def _fresh_prompts() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def judged_run(tmp_path: Path, uri: str) -> Any:
    """The judged workflow, its node on a registry prompt: one trace with judge verdicts."""
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()  # the store's tables
    client.register_prompt(name="write_prompt", template="Write about {{ topic }}.")
    text = JUDGED.replace("URI", json.dumps(uri)).replace(
        '    prompt: "Write about {topic}."\n', "    prompt_ref: {name: write_prompt, version: 1}\n"
    )
    path = tmp_path / "judged.yaml"
    path.write_text(text, encoding="utf-8")
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(120) and result.trace_written, result.trace_error
    return result


@contextmanager
def statements() -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs run meanwhile, with their parameters."""
    found: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            found.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def one(found: list[tuple[str, Any]], *parts: str) -> tuple[str, Any]:
    (hit,) = [(s, p) for s, p in found if all(part in s for part in parts)]
    return hit


def pg_execute(uri: str, *sql: str) -> list[Any]:
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        raw = engine.raw_connection()
        try:
            raw.driver_connection.autocommit = True  # VACUUM
            cur = raw.cursor()
            rows: list[Any] = []
            for statement in sql:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description else []
            return rows
        finally:
            raw.close()
    finally:
        engine.dispose()


def pg_plan(uri: str, statement: str, parameters: Any, *settings: str) -> str:
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for setting in settings:
                cur.execute(setting)
            cur.execute("EXPLAIN " + statement, parameters)
            return "\n".join(row[0] for row in cur.fetchall())
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_the_first_write_to_postgresql_creates_the_report_indexes(tmp_path, postgres_tracking_uri):
    uri = postgres_tracking_uri
    judged_run(tmp_path, uri)
    rows = pg_execute(
        uri,
        "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ca_report_%'",
    )
    found = dict(rows)
    assert set(found) >= {"ca_report_judges", "ca_report_prompt_spans"}
    judges = found["ca_report_judges"]
    assert "ON public.assessments" in judges
    assert "INCLUDE (aggregate_value, assessment_metadata, trace_id)" in judges
    assert "WHERE (((assessment_type)::text = 'feedback'::text)" in judges
    assert "'%\"on_fail\"%'" in judges
    assert "ON public.spans" in found["ca_report_prompt_spans"]
    assert "'node.prompt_version'" in found["ca_report_prompt_spans"]
    assert ensure_report_indexes(uri, rollup_mode="stale") == []  # nothing left to do
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert indexes.missing(conn) == []
    finally:
        engine.dispose()


def test_report_quality_and_prompts_read_the_indexes_on_postgresql(tmp_path, postgres_tracking_uri):
    uri = postgres_tracking_uri
    result = judged_run(tmp_path, uri)
    trace = f"'{result.trace_id}'"
    # 1,000 copies of the run's verdicts (so the planner has a table worth an index), and
    # the run's own verdicts in the evening (UTC) of 2024-01-01
    columns = [
        r[0]
        for r in pg_execute(
            uri,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'assessments' ORDER BY ordinal_position",
        )
    ]
    varied = {
        "assessment_id": "a.assessment_id || '-copy-' || i",
        "trace_timestamp_ms": f"{EVENING + DAY_MS}::bigint + i",
    }
    select = ", ".join(varied.get(c, f"a.{c}") for c in columns)
    pg_execute(
        uri,
        "SET synchronous_commit = on",  # the test server's is off: VACUUM would skip the rows
        f"UPDATE assessments SET trace_timestamp_ms = {EVENING} WHERE trace_id = {trace}",
        f"INSERT INTO assessments ({', '.join(columns)}) SELECT {select} "
        f"FROM assessments a, generate_series(1, 1000) i WHERE a.trace_id = {trace}",
        "VACUUM ANALYZE assessments",
        "VACUUM ANALYZE spans",
    )
    with statements() as found:
        report = quality_report(uri)
    rows = {(r.judge, r.node): r for r in report.rows}
    assert rows[("on_topic", "write")].runs == 1001 and rows[("final_ok", None)].runs == 1001
    days = rows[("final_ok", None)].by_day
    assert [(d["day"], d["runs"]) for d in days] == [("2024-01-01", 1), ("2024-01-02", 1000)]
    statement, parameters = one(found, "FROM assessments", "GROUP BY")
    assert "JSON" not in statement  # grouped by the metadata text, parsed once per text
    # at this size the planner reads the table whole; when it does not, the index serves the
    # query alone (its condition proven, every column in it): no table row read
    plan = pg_plan(uri, statement, parameters, "SET enable_seqscan = off")
    assert "Index Only Scan using ca_report_judges" in plan, plan
    with statements() as found:
        prompts = prompt_report(uri)
    assert [v.runs for v in prompts.prompts["write_prompt"]] == [1]
    statement, parameters = one(found, "FROM spans", "count(DISTINCT spans.trace_id)")
    plan = pg_plan(uri, statement, parameters, "SET enable_seqscan = off")
    assert "using ca_report_prompt_spans" in plan, plan


def test_sqlite_report_quality_reads_its_covering_index(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = judged_run(tmp_path, uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute(
            f"UPDATE assessments SET trace_timestamp_ms = {EVENING} WHERE trace_id = ?",
            (result.trace_id,),
        )
    db.close()
    with statements() as found:
        report = quality_report(uri)
    final = next(r for r in report.rows if r.judge == "final_ok")
    assert [(d["day"], d["runs"]) for d in final.by_day] == [("2024-01-01", 1)]
    statement, parameters = one(found, "FROM assessments", "GROUP BY")
    assert "INDEXED BY ca_report_judges" in statement
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        plan = " ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + statement, parameters))
        # and without the hint SQLite would take MLflow's index on assessment_type
        plain = statement.replace(" INDEXED BY ca_report_judges", "")
        unhinted = " ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + plain, parameters))
    db.close()
    assert "COVERING INDEX ca_report_judges" in plan, plan
    assert "ca_report_judges" not in unhinted, unhinted
    assert quality_report(uri).to_dict() == report.to_dict()


def test_an_sqlite_index_from_an_older_version_is_rebuilt(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    judged_run(tmp_path, uri)
    before = quality_report(uri).to_dict()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # the definition of the last version
        db.execute("DROP INDEX ca_report_judges")
        db.execute(
            "CREATE INDEX ca_report_judges ON assessments (experiment_id, name, "
            "json_extract(assessment_metadata, '$.node'), trace_timestamp_ms, aggregate_value, "
            "json_extract(assessment_metadata, '$.passed'), trace_id) WHERE "
            "assessment_type = 'feedback' AND "
            "json_extract(assessment_metadata, '$.on_fail') IS NOT NULL"
        )
    db.close()
    from configurable_agents.observe.report.sql import missing_report_indexes

    assert missing_report_indexes(uri) == ["ca_report_judges"]
    assert quality_report(uri).to_dict() == before  # the old index serves meanwhile
    assert ensure_report_indexes(uri) == ["ca_report_judges"]
    assert missing_report_indexes(uri) == [] and ensure_report_indexes(uri) == []
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'ca_report_judges'")
    db.close()
    assert sql[0] == indexes.sqlite_sql("ca_report_judges")
    assert quality_report(uri).to_dict() == before

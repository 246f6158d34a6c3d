"""Rows of MLflow 3.17's trace tables, built straight from our span records (no OTel or
MLflow span objects, no ORM rows), and a bulk insert for them. ``mlflow_sink`` writes them;
``tests/observe/test_mlflow_sink.py`` proves every row equals what MLflow's client writes."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["assessment_row", "insert", "link_prompt_versions", "prompt_link_rows", "span_rows"]

_CHUNK = 200


def span_rows(trace: Any, trace_id: str, experiment_id: int) -> list[dict[str, Any]]:
    """The ``spans`` rows of a trace, as MLflow's ``log_spans`` stores them (same content
    JSON, cost and model columns), built straight from our span records.

    MLflow's ``translate_span_when_storing`` fills in what other instrumentations leave out
    (inputs, outputs, token usage, message format); our spans carry all of it already, so it
    would return the same dict (the golden-rows test checks this) at twice the cost.
    """
    from mlflow.store.tracking.utils.trace_analytics import (
        bounded_model_dimension,
        finite_float_or_none,
    )

    from .mlflow_entities import plain_json, span_attributes, span_dict

    rows = []
    for record in trace.spans:
        attributes = span_attributes(record, trace_id)
        cost = record.attributes.get("mlflow.llm.cost") or {}
        model = record.attributes.get("mlflow.llm.model")
        provider = record.attributes.get("mlflow.llm.provider")
        rows.append(
            {
                "trace_id": trace_id,
                "experiment_id": experiment_id,
                "span_id": f"{record.span_id:016x}",
                "parent_span_id": f"{record.parent_id:016x}"
                if record.parent_id is not None
                else None,
                "name": record.name,
                "type": record.span_type,
                "status": "ERROR" if record.error is not None else "OK",
                "start_time_unix_nano": record.start_ns,
                "end_time_unix_nano": max(record.end_ns, record.start_ns),
                "content": plain_json(span_dict(trace.trace_id, record, attributes)),
                "input_cost": finite_float_or_none(cost.get("input_cost")),
                "output_cost": finite_float_or_none(cost.get("output_cost")),
                "total_cost": finite_float_or_none(cost.get("total_cost")),
                "model_name": bounded_model_dimension(model),
                "model_provider": bounded_model_dimension(provider),
            }
        )
    return rows


def insert(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in the session's transaction: on SQLite with the driver's
    ``executemany`` (SQLAlchemy's per-row parameter processing would double the cost; every
    value here is a plain str, int, float, bool or None), elsewhere through SQLAlchemy (its
    "insertmanyvalues" batches rows into multi-row INSERTs on PostgreSQL and MySQL)."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(tuple(row.values()))
        cursor = connection.connection.driver_connection.cursor()
        try:
            for columns, values in groups.items():
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" * len(columns))
                cursor.executemany(
                    f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',
                    values,
                )
        finally:
            cursor.close()
        return
    import sqlalchemy as sa

    for start in range(0, len(rows), _CHUNK):
        # Fixed-size chunks: SQLAlchemy caches the compiled statement per size.
        session.execute(sa.insert(table), rows[start : start + _CHUNK])


def assessment_row(
    assessment: Any,
    trace_id: str,
    experiment_id: int,
    trace_time_ms: int,
    columns: list[tuple[str, str]],
) -> dict[str, Any]:
    """One ``assessments`` row, as ``SqlAssessments.from_mlflow_entity`` makes it (without
    building the ORM object: a feedback's row is plain columns)."""
    from mlflow.store.tracking.dbmodels.models import SqlAssessments
    from mlflow.store.tracking.utils.trace_analytics import assessment_aggregate

    feedback = assessment.feedback
    if feedback is None or feedback.error is not None:
        sql = SqlAssessments.from_mlflow_entity(assessment)
        sql.trace_id, sql.experiment_id, sql.trace_timestamp_ms = (
            trace_id,
            experiment_id,
            trace_time_ms,
        )
        return {name: getattr(sql, key) for key, name in columns}
    from mlflow.tracing.utils import generate_assessment_id
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    aggregate, numeric = assessment_aggregate(feedback.value)
    values = {
        "assessment_id": assessment.assessment_id or generate_assessment_id(),
        "trace_id": trace_id,
        "experiment_id": experiment_id,
        "trace_timestamp_ms": trace_time_ms,
        "name": assessment.name,
        "assessment_type": "feedback",
        "value": json.dumps(feedback.value),
        "error": None,
        "created_timestamp": assessment.create_time_ms or now,
        "last_updated_timestamp": assessment.last_update_time_ms or now,
        "source_type": assessment.source.source_type,
        "source_id": assessment.source.source_id,
        "run_id": assessment.run_id,
        "span_id": assessment.span_id,
        "rationale": assessment.rationale,
        "overrides": assessment.overrides,
        "valid": True,
        "assessment_metadata": json.dumps(assessment.metadata) if assessment.metadata else None,
        "aggregate_value": aggregate,
        "is_numeric_value": numeric,
    }
    return {name: values.get(key) for key, name in columns}


def _linked(info: Any) -> list[dict[str, str]]:
    raw = info.tags.get("mlflow.linkedPrompts")
    if not raw:
        return []
    try:
        found = json.loads(raw)
    except ValueError:
        return []
    return [p for p in found if isinstance(p, dict) and p.get("name") and p.get("version")]


def prompt_link_rows(info: Any) -> list[dict[str, Any]]:
    """The ``entity_associations`` rows linking a trace to the prompt versions its
    ``mlflow.linkedPrompts`` tag lists, as MLflow's ``link_prompts_to_trace`` writes them
    (``search_traces(filter_string='prompt = "name/3"')`` reads them)."""
    import uuid

    from mlflow.entities.entity_type import EntityAssociationType
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    return [
        {
            "association_id": uuid.uuid4().hex,
            "source_type": EntityAssociationType.TRACE,
            "source_id": info.trace_id,
            "destination_type": EntityAssociationType.PROMPT_VERSION,
            "destination_id": f"{p['name']}/{p['version']}",
            "created_time": now,
        }
        for p in _linked(info)
    ]


def link_prompt_versions(store: Any, info: Any) -> None:
    """Link a trace written through MLflow's client to its prompt versions with the tracking
    store's own ``link_prompts_to_trace`` (SQL: the association rows; REST: the server's
    ``LinkPromptsToTrace``). The tag itself went in with the trace. Never raises: a store
    without the call still has the tag."""
    prompts = _linked(info)
    if not prompts:
        return
    from mlflow.entities.model_registry import PromptVersion

    versions = [
        PromptVersion(p["name"], int(p["version"]), template="")  # type: ignore[abstract]
        for p in prompts
    ]
    try:
        store.link_prompts_to_trace(info.trace_id, versions)
    except Exception as exc:  # noqa: BLE001 - the trace is written; its tag names the prompts
        import logging

        logging.getLogger("configurable_agents.observe").debug(
            "prompt links of %s not written: %s", info.trace_id, exc
        )

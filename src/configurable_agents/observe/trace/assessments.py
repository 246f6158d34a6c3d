"""``assessments`` spool records: the verdicts of ``warn`` judges, added to a trace already
written.

A run with ``warn`` judges is spooled at once, as any run (durable when ``run_workflow``
returns), with a hold; its warn judges run afterwards in a background thread
(``observe.judging``), which normally puts the judged run in the held record's place. When a
drainer took the record first (the hold ran out, or a ``flush`` from another process), or
with ``async_logging: false`` (no hold), the verdicts are appended as a second, small record
of kind ``assessments`` for the MLflow sink only: the trace id, the run id, the verdicts as
``Feedback`` fields (the judged node's span id worked out from the run's span tree, whose ids
derive from the run id) and the complete ``quality_assessment.json``.

The MLflow sink writes them as feedback assessments on the existing trace: bulk
``assessments`` rows on a known SQL schema (the rows ``mlflow.log_feedback`` writes), MLflow's
client elsewhere (``mlflow server``). Assessment ids derive from the run id and the judge
(name, node, visit), and ids the store has are skipped, so a record retried after a crash
never duplicates one. A trace not in the store yet is "failed, retry later" (it normally is:
the run record is older, same sink, drained first); after ``ORPHAN_AFTER`` seconds without it
the record is rejected (and set aside after the drainer's attempts). This path adds no judge
spans and no ``node.quality_score`` (spans already written are not rewritten).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .spool import SpoolRecord

log = logging.getLogger("configurable_agents.observe")

KIND = "assessments"
ORPHAN_AFTER = 24 * 3600.0  # seconds an assessments record waits for its trace


def assessment_id(run_id: str, name: str, node: str | None, visit: int | None) -> str:
    """The id of a warn verdict's assessment: the same on every retry (MLflow's shape)."""
    key = f"{run_id}\0{name}\0{node or ''}\0{'' if visit is None else visit}".encode()
    return "a-" + hashlib.blake2b(key, digest_size=16).hexdigest()


def record_data(workflow: Any, snapshot: Any, verdicts: Sequence[Any]) -> dict[str, Any]:
    """The payload of an ``assessments`` record: ``snapshot`` (``spool_snapshot`` of the run
    with every verdict) gives the span ids and the quality artifact; ``verdicts`` (the warn
    judges') are the ones to add."""
    from .judge_spans import feedback_fields, quality_assessment
    from .spans import build_trace

    trace = build_trace(workflow, snapshot)
    only = {(v.name, v.node, v.visit) for v in verdicts}
    fields = feedback_fields(trace, only)
    for item in fields:
        item["assessment_id"] = assessment_id(
            snapshot.run_id, item["name"], item["node"], item["visit"]
        )
    return {
        "trace_id": f"tr-{snapshot.run_id}",
        "run_id": snapshot.run_id,
        "created": time.time(),
        "feedbacks": fields,
        "quality": quality_assessment(trace),
    }


def write(sink: Any, batch: Sequence[tuple[int, SpoolRecord]], result: Any) -> None:
    """Write ``assessments`` records through ``sink`` (an opened ``MlflowSink``)."""
    if sink.fast:
        done = _write_sql(sink, batch, result)
    else:
        done = []
        for record_id, record in batch:
            try:
                if _write_client(sink, record, result, record_id):
                    done.append(record)
                    result.delivered.append(record_id)
            except Exception as exc:  # noqa: BLE001 - the store is down: retry it later
                result.failed[record_id] = f"{type(exc).__name__}: {exc}"
    for record in done:
        _save_quality(sink, record)


def _missing(result: Any, record_id: int, record: SpoolRecord) -> None:
    message = f"the trace {record.data['trace_id']} is not in the store yet"
    if time.time() - float(record.data.get("created", time.time())) > ORPHAN_AFTER:
        result.rejected[record_id] = message + f" after {ORPHAN_AFTER:.0f} s"
    else:
        result.failed[record_id] = message


def _write_sql(sink: Any, batch: Sequence[tuple[int, SpoolRecord]], result: Any) -> list[Any]:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo
    from mlflow.store.tracking.utils.sql_trace_rollups import (
        RollupFamily,
        enqueue_rollup_rebuild_partitions,
        rollups_enabled,
    )

    from .judge_spans import to_feedback
    from .mlflow_rows import assessment_row, insert

    columns = [(a.key, a.columns[0].name) for a in sa.inspect(SqlAssessments).column_attrs]
    trace_ids = {record.data["trace_id"] for _, record in batch}
    wanted = [f["assessment_id"] for _, r in batch for f in r.data["feedbacks"]]
    done = []
    with sink.store.ManagedSessionMaker(read_only=False) as session:
        traces = {
            row[0]: (int(row[1]), int(row[2]))
            for row in session.query(
                SqlTraceInfo.request_id, SqlTraceInfo.experiment_id, SqlTraceInfo.timestamp_ms
            ).filter(SqlTraceInfo.request_id.in_(trace_ids))
        }
        existing = {
            row[0]
            for row in session.query(SqlAssessments.assessment_id).filter(
                SqlAssessments.assessment_id.in_(wanted)
            )
        }
        rows: list[dict[str, Any]] = []
        partitions: dict[int, list[int]] = {}
        for record_id, record in batch:
            trace_id = record.data["trace_id"]
            found = traces.get(trace_id)
            if found is None:
                _missing(result, record_id, record)
                continue
            experiment_id, timestamp = found
            for fields in record.data["feedbacks"]:
                if fields["assessment_id"] in existing:
                    continue
                existing.add(fields["assessment_id"])
                feedback = to_feedback(fields, trace_id, fields["assessment_id"])
                rows.append(assessment_row(feedback, trace_id, experiment_id, timestamp, columns))
                partitions.setdefault(experiment_id, []).append(timestamp)
            result.delivered.append(record_id)
            done.append(record)
        insert(session, SqlAssessments.__table__, rows)
        if partitions and rollups_enabled():
            enqueue_rollup_rebuild_partitions(
                session,
                [(RollupFamily.ASSESSMENT, exp, stamps) for exp, stamps in partitions.items()],
            )
    return done


def _write_client(sink: Any, record: SpoolRecord, result: Any, record_id: int) -> bool:
    from .judge_spans import to_feedback

    trace_id = record.data["trace_id"]
    try:
        sink.client.get_trace_info(trace_id)
    except Exception:  # noqa: BLE001 - not there yet (or the store is down): later
        _missing(result, record_id, record)
        return False
    for fields in record.data["feedbacks"]:
        try:
            sink.client.get_assessment(trace_id, fields["assessment_id"])
            continue  # written by an earlier attempt
        except Exception:  # noqa: BLE001 - not found: write it
            pass
        sink.client.store.create_assessment(to_feedback(fields, trace_id, fields["assessment_id"]))
    return True


def _save_quality(sink: Any, record: SpoolRecord) -> None:
    """``quality_assessment.json`` (every verdict of the run) into the trace's artifacts."""
    data = record.data
    level = data.get("artifact_level", "standard")
    if not data.get("quality") or not data.get("log_artifacts", True):
        return
    if level not in ("standard", "full"):
        return
    try:
        from .artifacts import _json
        from .mlflow_sink import _local_path

        content = _json(data["quality"])
        uri = sink._artifact_uri(data["trace_id"])
        local = _local_path(uri)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
            tmp = local / f".quality_assessment.json.{os.getpid()}"
            tmp.write_bytes(content)
            os.replace(tmp, local / "quality_assessment.json")
            return
        import tempfile

        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with tempfile.TemporaryDirectory(prefix="ca-quality-") as folder:
            path = Path(folder, "quality_assessment.json")
            path.write_bytes(content)
            get_artifact_repository(uri).log_artifact(str(path))
    except Exception as exc:  # noqa: BLE001 - the assessments are written
        log.debug("quality_assessment.json of %s not saved: %s", data["trace_id"], exc)

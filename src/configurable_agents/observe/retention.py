"""``retention_days``: delete a workflow's traces older than N days, with their artifacts,
assessments (MLflow deletes them with the trace) and spool entries.

Traces are found in the workflow's experiment(s) (every experiment ``experiment_name`` can
render to, when it has ``{tenant}``-style placeholders) and deleted with MLflow's
``delete_traces(trace_ids=...)`` in batches; their artifact folders are deleted through the
artifact repository (MLflow keeps them otherwise), and the report rollup of each experiment
is rebuilt so reports agree with the traces that remain. The server's run records are the
server's (``serve.records.RunStore.delete_older``); the CLI's ``retention apply`` does both.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import InputError, Issue

if TYPE_CHECKING:
    from ..config.validate import LoadedWorkflow

log = logging.getLogger("configurable_agents.observe")
DAY_MS = 86_400_000
BATCH = 100


@dataclass
class RetentionResult:
    """What retention deleted (or, with ``dry_run``, would delete)."""

    workflow: str
    days: int
    cutoff_ms: int
    dry_run: bool
    traces: dict[str, int] = field(default_factory=dict)  # experiment name -> traces
    artifacts: int = 0
    spool_records: int = 0
    run_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "retention_days": self.days,
            "cutoff_ms": self.cutoff_ms,
            "dry_run": self.dry_run,
            "traces": dict(self.traces),
            "artifacts": self.artifacts,
            "spool_records": self.spool_records,
            "run_records": self.run_records,
        }


def retention_days(loaded: LoadedWorkflow) -> int:
    days = loaded.spec.config.observability.mlflow.retention_days
    if days is None:
        raise InputError(
            Issue(
                f"workflow '{loaded.name}' sets no retention_days",
                loaded.file,
                loaded.document.line_of(("config", "observability", "mlflow")),
                "set config.observability.mlflow.retention_days: N (days to keep)",
            )
        )
    return days


def experiment_pattern(template: str) -> re.Pattern[str]:
    """The experiment names ``template`` renders to (``{tenant}`` matches any value)."""
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", template)
    body = "".join(".+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def apply_traces(
    loaded: LoadedWorkflow, *, dry_run: bool = False, now_ms: int | None = None
) -> RetentionResult:
    """Delete (or count) the workflow's traces older than ``retention_days`` in its MLflow
    store, their artifacts, and its spool's records of that age."""
    days = retention_days(loaded)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = RetentionResult(loaded.name, days, now_ms - days * DAY_MS, dry_run)
    mlflow = loaded.spec.config.observability.mlflow
    from .trace.targets import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow.tracking_uri)
    if not (uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()):
        _apply_store(uri, loaded, mlflow.experiment_name, result)
    result.spool_records = _apply_spool(loaded, result)
    return result


def _apply_store(uri: str, loaded: LoadedWorkflow, template: str, result: RetentionResult) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    pattern = experiment_pattern(template)
    experiments = [e for e in client.search_experiments() if pattern.match(e.name)]
    for experiment in experiments:
        ids = _old_trace_ids(client, uri, experiment.experiment_id, loaded.name, result.cutoff_ms)
        result.traces[experiment.name] = len(ids)
        if result.dry_run or not ids:
            continue
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            locations = _artifact_locations(client, uri, batch)
            client.delete_traces(experiment_id=experiment.experiment_id, trace_ids=batch)
            result.artifacts += _delete_artifacts(locations)
        _rebuild_rollup(uri, int(experiment.experiment_id))


def _old_trace_ids(
    client: Any, uri: str, experiment_id: str, workflow: str, cutoff_ms: int
) -> list[str]:
    """This workflow's traces (root span ``workflow_<name>``) at or before ``cutoff_ms``."""
    from .report.reports import store_kind

    if store_kind(uri) == "sql":
        from .report.store import connect, sa_module, tables

        sa = sa_module()
        with connect(uri) as conn:
            ti = tables(sa)["trace_info"].c
            query = sa.select(ti.request_id).where(
                ti.experiment_id == int(experiment_id),
                ti.timestamp_ms <= cutoff_ms,
                ti.trace_name == f"workflow_{workflow}",
            )
            return [row[0] for row in conn.execute(query)]
    found: list[str] = []
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id],
            filter_string=f"trace.timestamp_ms <= {cutoff_ms}",
            max_results=500,
            page_token=token,
            include_spans=False,
        )
        found += [t.info.trace_id for t in page if t.info.request_metadata is not None]
        token = page.token
        if not token:
            return found


def _artifact_locations(client: Any, uri: str, trace_ids: list[str]) -> list[str]:
    """The ``mlflow.artifactLocation`` tags of these traces."""
    from .report.reports import store_kind

    if store_kind(uri) == "sql":
        from .report.store import connect, sa_module, tables

        sa = sa_module()
        with connect(uri) as conn:
            tags = tables(sa)["trace_tags"].c
            query = sa.select(tags.value).where(
                tags.key == "mlflow.artifactLocation", tags.request_id.in_(trace_ids)
            )
            return [row[0] for row in conn.execute(query)]
    locations = []
    for trace_id in trace_ids:
        with contextlib.suppress(Exception):
            location = client.get_trace(trace_id).info.tags.get("mlflow.artifactLocation")
            if location:
                locations.append(location)
    return locations


def _delete_artifacts(locations: list[str]) -> int:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    deleted = 0
    for location in locations:
        try:
            get_artifact_repository(location).delete_artifacts()
            deleted += 1
        except Exception as exc:  # noqa: BLE001 - a trace without artifacts, or gone already
            log.debug("artifacts at %s not deleted: %s", location, exc)
            continue
        local = location.removeprefix("file://")
        if local.startswith("/"):  # traces/<id>/artifacts: drop the emptied traces/<id>
            with contextlib.suppress(OSError):
                Path(local).parent.rmdir()
    return deleted


def _rebuild_rollup(uri: str, experiment_id: int) -> None:
    from .report.reports import store_kind

    if store_kind(uri) != "sql":
        return
    from .report import rollup
    from .report.store import connect, table_names

    try:
        with connect(uri, write=True) as conn:
            if rollup.ROLLUP in table_names(conn):
                rollup.rebuild(conn, [experiment_id])
            conn.commit()
    except Exception as exc:  # noqa: BLE001 - reports fall back to the span tables
        log.warning("the report rollup was not rebuilt after retention: %s", exc)


def _apply_spool(loaded: LoadedWorkflow, result: RetentionResult) -> int:
    """Spool records of this workflow older than the cutoff (undelivered traces that old)."""
    from .trace.spool import Entry, open_spool, workflow_spool_path

    obs = loaded.spec.config.observability
    path = workflow_spool_path(obs.spool.path, Path(loaded.file).parent)
    if not path.exists():
        return 0
    spool = open_spool(path)
    cutoff_s = result.cutoff_ms / 1000
    with spool._tx() as db:
        old = db.execute(
            "SELECT id, payload FROM records WHERE created <= ?", (cutoff_s,)
        ).fetchall()
        mine = []
        for record_id, payload in old:
            try:
                record = Entry(record_id, 0.0, 0, payload).load()
                info = record.data.get("workflow")
                name = getattr(info, "name", None)
            except Exception:  # noqa: BLE001 - a record of another format: not ours to judge
                continue
            if name == loaded.name:
                mine.append(record_id)
        if not result.dry_run:
            for record_id in mine:
                db.execute("DELETE FROM deliveries WHERE record_id = ?", (record_id,))
                db.execute("DELETE FROM records WHERE id = ?", (record_id,))
    return len(mine)

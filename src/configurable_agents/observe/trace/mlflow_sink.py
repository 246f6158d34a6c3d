"""The MLflow sink: spooled runs written as MLflow traces, many per transaction.

On a SQL store (SQLite, PostgreSQL, MySQL) whose schema revision is one we know
(``KNOWN_REVISIONS``), a batch is written as bulk inserts: the trace rows (``trace_info``,
``trace_tags``, ``trace_request_metadata``, ``assessments``) as MLflow's ``start_trace``
writes them, and the ``spans`` rows as MLflow's ``log_spans`` stores them, all in one
transaction (a test compares every row with what MLflow's own client writes). A trace
already in the store is not written again, so a batch retried after a crash never duplicates
one.

On any other store (an ``mlflow server`` over HTTP, a schema revision we do not know) each
trace goes through MLflow's ``TracingClient`` (``start_trace`` then ``log_spans``), skipping
traces the store already has. ``assessments`` records (the verdicts of ``warn`` judges, added
to a trace already written) are written after the batch's runs (``assessments.py``). The
first time a writer opens a SQL store it creates the report indexes
(``observe.report.sql.ensure_report_indexes``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...exceptions import MissingExtraError
from ...wal import enable_wal
from .mlflow_rows import (
    assessment_row,
    insert,
    link_prompt_versions,
    prompt_link_rows,
    span_rows,
)
from .spool import SpoolRecord
from .targets import mask_url, sqlite_path

log = logging.getLogger("configurable_agents.observe")
# SQLAlchemy says so when MLflow reflects its ``spans`` table and meets our report indexes
# (expression indexes it cannot reflect): harmless, and not for the user's terminal.
warnings.filterwarnings(
    "ignore", message="Skipped unsupported reflection of expression-based index"
)

# MLflow 3.17's schema head. Another revision: the client path, with one warning.
KNOWN_REVISIONS = frozenset({"dc11669786a5"})
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("mlflow", "mlflow", "MLflow tracing") from exc


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (one TCP connect) when a network store is down, instead of MLflow's
    minutes of retries."""
    import socket

    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return
    parts = urlsplit(uri)
    host = parts.hostname
    if not host:
        return
    defaults = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
    port = parts.port or defaults.get(parts.scheme.split("+", 1)[0])
    if port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach the tracking store at {host}:{port} ({exc})") from exc


@contextlib.contextmanager
def store_creation_lock(path: Path) -> Iterator[None]:
    """Serialize creating a new SQLite store between processes (MLflow's migrations are not
    safe to run from several processes at once)."""
    import fcntl
    import hashlib

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir(), f"configurable-agents-store-{key}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_root_lock = threading.Lock()


def create_experiment(client: Any, name: str, store: Path | None) -> None:
    """Create experiment ``name``. On a SQLite store its artifacts go next to the store file
    (``<store dir>/mlruns/<experiment id>``, the layout MLflow gives a store opened from its
    own directory), whatever the working directory of the process that creates it: the CLI,
    a server started from ``/``, a detached drainer or ``observability flush``."""
    tracking: Any = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None or not hasattr(tracking, "artifact_root_uri"):
        client.create_experiment(name)
        return
    with _root_lock:  # the store object is MLflow's cached one: put its default back
        default = tracking.artifact_root_uri
        tracking.artifact_root_uri = str(store.resolve().parent / "mlruns")
        try:
            client.create_experiment(name)
        finally:
            tracking.artifact_root_uri = default


class MlflowSink:
    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self.client: Any = None
        self.store: Any = None
        self.experiment_id = ""
        self.artifact_root = ""
        self.fast = False  # the batched SQL path
        self.spans_in_store = True
        self.note: str | None = None  # why the fast path is off
        self._pool: Any = None  # the artifact writers' threads

    # ------------------------------------------------------------------ opening

    def open(self) -> None:
        if self.client is not None:
            return
        require_mlflow()
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        check_reachable(self.uri)
        from mlflow.tracing.client import TracingClient
        from mlflow.tracking import MlflowClient

        path = sqlite_path(self.uri)
        lock = store_creation_lock(path) if path is not None else contextlib.nullcontext()
        with lock:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                    enable_wal(db)
            client = MlflowClient(self.uri)
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                with contextlib.suppress(Exception):  # another process created it first
                    create_experiment(client, self.experiment, path)
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise RuntimeError(f"cannot create the experiment {self.experiment!r}")
        self.experiment_id = str(experiment.experiment_id)
        self.artifact_root = experiment.artifact_location
        self.client = TracingClient(self.uri)
        scheme = urlsplit(self.uri).scheme.split("+", 1)[0]
        if scheme in SQL_SCHEMES:
            self.store = self.client.store
            revision = self._revision()
            if revision in KNOWN_REVISIONS:
                self.fast = True
            else:
                self.note = (
                    f"MLflow schema revision {revision!r} is not one this version was written "
                    "for; traces are written one at a time through MLflow's client"
                )
                log.warning("%s: %s", mask_url(self.uri), self.note)
            with contextlib.suppress(Exception):
                from ..report.sql import ensure_report_indexes

                ensure_report_indexes(self.uri)

    def _revision(self) -> str | None:
        import sqlalchemy as sa

        with self.store.ManagedSessionMaker() as session:
            row = session.execute(sa.text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        store, self.store, self.client = self.store, None, None
        engine = getattr(store, "engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.dispose()

    # ------------------------------------------------------------------ writing

    def write(self, batch: Sequence[tuple[int, SpoolRecord]]) -> Any:
        from . import assessments
        from .drain import WriteResult

        self.open()
        result = WriteResult()
        later = [(i, r) for i, r in batch if r.kind == assessments.KIND]
        self._write_runs([(i, r) for i, r in batch if r.kind != assessments.KIND], result)
        if later:  # after the runs: their traces are usually in this very batch
            assessments.write(self, later, result)
        return result

    def _write_runs(self, batch: Sequence[tuple[int, SpoolRecord]], result: Any) -> None:
        prepared: list[tuple[int, Any, Any, Any, SpoolRecord]] = []
        for record_id, record in batch:
            try:
                trace, info, spans = self._prepare(record)
            except Exception as exc:  # noqa: BLE001 - this record is the problem
                result.rejected[record_id] = f"cannot build the trace: {type(exc).__name__}: {exc}"
                continue
            prepared.append((record_id, trace, info, spans, record))
        if not prepared:
            return
        jobs = [
            (trace, info, record.data["mlflow"].get("artifact_level", "standard"))
            for _, trace, info, _, record in prepared
            if record.data["mlflow"].get("log_artifacts", True)
        ]
        # A batch that fails is retried whole, and rewriting a trace's artifacts writes the
        # same files. Local files are written on this thread before the rows (so a trace in
        # the store has its files): handing them to threads cost ~20% more CPU per trace for
        # no gain in throughput (bench/tracing_pipeline.py). Uploads to a remote artifact
        # store wait on the network: threads send them while this one writes the rows.
        pending: Any = []
        if _local_path(self.artifact_root) is not None:
            for job in jobs:
                self._save_artifacts(*job)
        elif jobs:
            pending = self._artifact_pool().map(lambda job: self._save_artifacts(*job), jobs)
        try:
            if self.fast:
                self._write_sql([(p[2], p[1]) for p in prepared])
            else:
                for _, _, info, spans, _ in prepared:
                    self._write_client(info, spans)
        finally:
            list(pending)
        result.delivered.extend(record_id for record_id, *_ in prepared)

    def _artifact_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ca-artifacts")
        return self._pool

    def _save_artifacts(self, trace: Any, info: Any, level: str) -> None:
        try:
            self._artifacts(trace, info, level)
        except Exception as exc:  # noqa: BLE001 - the trace itself is written
            log.debug("artifacts of %s not saved: %s", info.trace_id, exc)

    def _prepare(self, record: SpoolRecord) -> tuple[Any, Any, Any]:
        from ...run.cost import summarize_cost
        from .mlflow_entities import to_mlflow
        from .spans import build_trace

        data = record.data
        result = data["result"]
        summarize_cost(result)
        trace = build_trace(data["workflow"], result, tags=data["tags"])
        trace.parent = data.get("parent")
        info, spans = to_mlflow(trace, self.experiment_id, spans=not self.fast)
        return trace, info, spans

    def _write_client(self, info: Any, spans: list[Any]) -> None:
        from mlflow.entities import TraceData

        try:
            self.client.get_trace_info(info.trace_id)
            exists = True
        except Exception:  # noqa: BLE001 - not found (or unreadable): write it
            exists = False
        if not exists:
            self.client.start_trace(info)
            link_prompt_versions(self.client.store, info)
        if self.spans_in_store:
            try:
                self.client.log_spans(self.experiment_id, spans)
                return
            except NotImplementedError:
                self.spans_in_store = False
        self.client._upload_trace_data(info, TraceData(spans=spans))

    def _write_sql(self, traces: list[tuple[Any, Any]]) -> None:
        import sqlalchemy as sa
        from mlflow.store.tracking.dbmodels.models import (
            SqlAssessments,
            SqlEntityAssociation,
            SqlSpan,
            SqlTraceInfo,
            SqlTraceMetadata,
            SqlTraceTag,
        )
        from mlflow.store.tracking.utils.sql_trace_rollups import (
            RollupFamily,
            enqueue_rollup_rebuild_partitions,
            rollups_enabled,
        )
        from mlflow.store.tracking.utils.trace_analytics import (
            PROMOTED_TRACE_METADATA_KEYS,
            analytics_columns_from_metadata,
            validate_trace_name,
        )
        from mlflow.tracing.constant import SpansLocation, TraceMetadataKey, TraceTagKey

        from ..report import rollup as report_rollup

        ids = [info.trace_id for info, _ in traces]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            existing = {
                row[0]
                for row in session.query(SqlTraceInfo.request_id).filter(
                    SqlTraceInfo.request_id.in_(ids)
                )
            }
            infos, tags, metadata, assessments, links = [], [], [], [], []
            new_ids: set[str] = set()
            assessment_columns = [
                (attr.key, attr.columns[0].name) for attr in sa.inspect(SqlAssessments).column_attrs
            ]
            for info, _ in traces:
                trace_id = info.trace_id
                if trace_id in existing:
                    continue
                existing.add(trace_id)
                meta = dict(info.trace_metadata.items())
                infos.append(
                    {
                        "request_id": trace_id,
                        "experiment_id": int(self.experiment_id),
                        "timestamp_ms": info.request_time,
                        "execution_time_ms": info.execution_duration,
                        "status": info.state.value,
                        "client_request_id": info.client_request_id,
                        "request_preview": info.request_preview,
                        "response_preview": info.response_preview,
                        "trace_name": validate_trace_name(info.tags.get(TraceTagKey.TRACE_NAME)),
                        "db_payload_generation": 1,  # what log_spans' bump makes it
                        **analytics_columns_from_metadata(meta),
                    }
                )
                new_ids.add(trace_id)
                tags += [
                    {"request_id": trace_id, "key": k, "value": v}
                    for k, v in info.tags.items()
                    if k != TraceTagKey.TRACE_NAME
                ]
                tags.append(
                    {
                        "request_id": trace_id,
                        "key": "mlflow.artifactLocation",
                        "value": self._artifact_uri(trace_id),
                    }
                )
                tags.append(
                    {
                        "request_id": trace_id,
                        "key": TraceTagKey.SPANS_LOCATION,
                        "value": SpansLocation.TRACKING_STORE.value,
                    }
                )
                links += prompt_link_rows(info)
                for key in PROMOTED_TRACE_METADATA_KEYS:
                    meta.pop(key, None)
                meta[TraceMetadataKey.TRACE_INFO_FINALIZED] = "true"
                metadata += [
                    {"request_id": trace_id, "key": k, "value": v} for k, v in sorted(meta.items())
                ]
                for assessment in info.assessments:
                    assessments.append(
                        assessment_row(
                            assessment,
                            trace_id,
                            int(self.experiment_id),
                            info.request_time,
                            assessment_columns,
                        )
                    )
            span_table = [
                row
                for info, trace in traces
                if info.trace_id in new_ids
                for row in span_rows(trace, info.trace_id, int(self.experiment_id))
            ]
            for model, rows in (
                (SqlTraceInfo, infos),
                (SqlTraceTag, tags),
                (SqlTraceMetadata, metadata),
                (SqlAssessments, assessments),
                (SqlSpan, span_table),
                (SqlEntityAssociation, links),
            ):
                insert(session, model.__table__, rows)
            report_rollup.add_traces(
                session, self.experiment_id, infos, [(i, t.spans) for i, t in traces]
            )
            if infos and rollups_enabled():
                partitions = [
                    (family, int(self.experiment_id), [row["timestamp_ms"] for row in infos])
                    for family in (RollupFamily.TRACE_METRIC, RollupFamily.ASSESSMENT)
                ] + [
                    (
                        RollupFamily.SPAN_COST,
                        int(self.experiment_id),
                        [row["start_time_unix_nano"] // 1_000_000 for row in span_table],
                    )
                ]
                enqueue_rollup_rebuild_partitions(session, partitions)

    # ------------------------------------------------------------------ artifacts

    def _artifact_uri(self, trace_id: str) -> str:
        from mlflow.utils.uri import append_to_uri_path

        return str(append_to_uri_path(self.artifact_root, "traces", trace_id, "artifacts"))

    def _artifacts(self, trace: Any, info: Any, level: str) -> None:
        from .artifacts import build_artifacts

        files = build_artifacts(trace, level)
        uri = self._artifact_uri(info.trace_id)
        local = _local_path(uri)
        if local is not None:
            folders = {os.path.dirname(name) for name in files}
            for folder in sorted(folders):
                os.makedirs(os.path.join(local, folder), exist_ok=True)
            for name, content in files.items():
                fd = os.open(
                    os.path.join(local, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
                )
                try:
                    view = memoryview(content)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(uri)
        with tempfile.TemporaryDirectory(prefix="ca-artifacts-") as tmp:
            for name, content in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            repo.log_artifacts(tmp)


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    if "://" not in uri and not uri.startswith(("mlflow-artifacts:", "dbfs:")):
        return Path(uri)
    return None

"""The background writer that turns finished runs into MLflow traces.

``submit`` queues a run and returns at once (``result.trace_id`` is already known). A writer
process (see ``TraceWriter``) prices the run, builds its span tree and writes the whole trace
in one go (``start_trace`` with tags, metadata and feedback, then ``log_spans``, then the
artifacts). ``flush`` waits for the queue; the CLI calls it before exiting (also on Ctrl-C and
SIGTERM) and an ``atexit`` hook does it for Python callers.

Failure policy: a store that is unreachable, locked, read-only or slow never fails or stalls a
run. SQLite stores run in WAL mode with retries on "database is locked"; anything else is
logged once per store as a warning and written to the status file that ``observability
status`` shows. A full queue drops traces (with one warning) rather than blocking runs.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import pickle
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import MissingExtraError
from . import status
from .dispatch import warn_once
from .spans import WorkflowInfo

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from ..config.schema import MlflowConfig
    from ..run.result import RunResult

log = logging.getLogger("configurable_agents.observe")

QUEUE_SIZE = 10_000
FLUSH_TIMEOUT_ENV = "CONFIGURABLE_AGENTS_FLUSH_TIMEOUT"
DEFAULT_FLUSH_TIMEOUT = 30.0
LOCK_RETRIES = 8
WRITER_ENV = "CONFIGURABLE_AGENTS_TRACE_WRITER"  # "thread": write in this process
INSTALL_HINT = 'pip install "configurable-agents[mlflow]"'


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("mlflow", "mlflow", "MLflow tracing") from exc


def resolve_tracking_uri(uri: str) -> str:
    """``sqlite:///relative.db`` as an absolute path, so the trace lands where the CLI says."""
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///file:")):
        path = uri.removeprefix("sqlite:///")
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0].removeprefix("file:")
        return Path(path) if path and path != ":memory:" else None
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialize creating a new store between processes (MLflow's migrations are not safe to
    run from 8 processes at once)."""
    import fcntl
    import hashlib
    import tempfile

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir(), f"configurable-agents-store-{key}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (one TCP connect) when a network store is down, instead of MLflow's
    minutes of retries."""
    import socket
    from urllib.parse import urlsplit

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


@dataclass
class _Target:
    """One tracking store and experiment, opened lazily in the writer thread."""

    uri: str
    experiment_name: str
    client: Any = None
    experiment_id: str | None = None
    spans_in_store: bool = True

    def open(self) -> None:
        if self.client is not None:
            return
        require_mlflow()
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow retries an unreachable server for minutes; a trace is not worth that.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        _check_reachable(self.uri)
        from mlflow.tracing.client import TracingClient
        from mlflow.tracking import MlflowClient

        path = sqlite_path(self.uri)
        lock = _file_lock(path) if path is not None else contextlib.nullcontext()
        with lock:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
            client = MlflowClient(self.uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(self.experiment_name)
                except Exception:  # another process created it first
                    experiment = client.get_experiment_by_name(self.experiment_name)
                    if experiment is None:
                        raise
                    experiment_id = experiment.experiment_id
            else:
                experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.client = TracingClient(self.uri)

    def write(self, info: Any, spans: list[Any]) -> Any:
        """Write one trace; retry while a SQLite store is locked by another process."""
        for attempt in range(LOCK_RETRIES):
            try:
                returned = self.client.start_trace(info)
                if self.spans_in_store:
                    try:
                        self.client.log_spans(self.experiment_id, spans)
                    except NotImplementedError:
                        self.spans_in_store = False
                if not self.spans_in_store:
                    from mlflow.entities import TraceData

                    self.client._upload_trace_data(returned, TraceData(spans=spans))
                return returned
            except Exception as exc:
                if not _is_locked(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")


@dataclass
class _Job:
    info: WorkflowInfo
    result: RunResult
    config: MlflowConfig
    tags: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)


class TraceStore:
    """Writes finished runs into tracking stores; runs in the writer process (or in a thread
    of the caller's process when that cannot start)."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str], _Target] = {}

    def _target(self, config: MlflowConfig) -> _Target:
        uri = resolve_tracking_uri(config.tracking_uri)
        key = (uri, config.experiment_name)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _Target(uri, config.experiment_name)
        return target

    def write(
        self, info: WorkflowInfo, result: RunResult, config: MlflowConfig, tags: dict[str, str]
    ) -> tuple[str | None, str | None]:
        """Write one trace; return (error, warning): the trace is lost when error is set."""
        uri = resolve_tracking_uri(config.tracking_uri)
        try:
            returned, trace = self._write(info, result, config, tags)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised into user code
            message = f"{type(exc).__name__}: {exc}".strip()
            with contextlib.suppress(Exception):
                status.record_error(uri, message)
            return message, None
        if config.log_artifacts:
            try:
                from .artifacts import build_artifacts, upload_artifacts

                upload_artifacts(returned, build_artifacts(trace, config.artifact_level))
            except Exception as exc:  # noqa: BLE001 - the trace itself is written
                message = f"artifacts not saved: {type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    status.record_error(uri, message)
                return None, f"trace {trace.mlflow_trace_id}: {message}"
        with contextlib.suppress(Exception):
            status.record_success(uri)
        return None, None

    def _write(
        self, info: WorkflowInfo, result: RunResult, config: MlflowConfig, tags: dict[str, str]
    ) -> tuple[Any, Any]:
        from .cost import summarize_cost
        from .mlflow_trace import to_mlflow
        from .spans import build_trace

        summarize_cost(result)
        trace = build_trace(info, result, tags=tags)
        target = self._target(config)
        target.open()
        trace_info, spans = to_mlflow(trace, str(target.experiment_id))
        return target.write(trace_info, spans), trace


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "big") + data


def _read_frame(stream: Any) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class TraceWriter:
    """Queues finished runs and hands them to the writer process, in order.

    Writing a trace costs tens of milliseconds of CPU inside MLflow and SQLAlchemy; done in a
    thread it would compete with the runs for the GIL. The writer process
    (``python -m configurable_agents.observe.writer_process``, started on first use, in its
    own session so Ctrl-C reaches only the CLI) does that work; this side only pickles the
    run in a sender thread and collects acknowledgements in a reader thread. If the process
    cannot start or dies, traces are written in a thread here instead.
    """

    def __init__(self) -> None:
        self._outbox: queue.Queue[_Job] = queue.Queue(QUEUE_SIZE)
        self._jobs: dict[str, _Job] = {}
        self._inflight: set[str] = set()
        self._pending = 0
        self._idle = threading.Condition()
        self._sender: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._process_failed = os.environ.get(WRITER_ENV) == "thread"
        self._local: TraceStore | None = None
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.abandoned = False  # the caller gave up waiting; do not wait again at exit

    def submit(self, job: _Job) -> None:
        with self._idle:
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name="configurable-agents-traces", daemon=True
                )
                self._sender.start()
                atexit.register(flush_at_exit)
            try:
                self._outbox.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                warn_once("queue-full", "MLflow tracing is behind; some traces were dropped")
                return
            self._jobs[job.result.run_id] = job
            self._pending += 1

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued trace is written (or failed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _send_loop(self) -> None:
        while True:
            job = self._outbox.get()
            if not self._send(job):
                if self._local is None:
                    self._local = TraceStore()
                error, warning = self._local.write(job.info, job.result, job.config, job.tags)
                self._finish(job.result.run_id, error, warning)
            del job

    def _send(self, job: _Job) -> bool:
        proc = self._process()
        if proc is None or proc.stdin is None:
            return False
        run_id = job.result.run_id
        snapshot = dataclasses.replace(job.result, exception=None)
        try:
            frame = _frame((run_id, job.info, snapshot, job.config, job.tags))
            with self._idle:
                self._inflight.add(run_id)
            proc.stdin.write(frame)
            proc.stdin.flush()
        except Exception:  # noqa: BLE001 - the process died: write here instead
            with self._idle:
                self._inflight.discard(run_id)
            self._process_failed = True
            return False
        return True

    def _process(self) -> subprocess.Popen[bytes] | None:
        if self._process_failed:
            return None
        if self._proc is None:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "configurable_agents.observe.writer_process"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,  # errors come back in the answers
                    start_new_session=True,
                )
            except OSError:
                self._process_failed = True
                return None
            threading.Thread(
                target=self._read_loop, args=(self._proc,), name="ca-trace-acks", daemon=True
            ).start()
        return self._proc

    def _read_loop(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while True:
            try:
                ack = _read_frame(proc.stdout)
            except Exception:  # noqa: BLE001 - a broken stream ends the process's work
                ack = None
            if ack is None:
                break
            run_id, error, warning = ack
            self._finish(run_id, error, warning)
        # The process is gone: what it had not acknowledged is lost; later traces go in-thread.
        self._process_failed = True
        with self._idle:
            lost = list(self._inflight)
        for run_id in lost:
            self._finish(run_id, "the trace writer process exited before writing it", None)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
            proc.stdout.close()
            if proc.stdin is not None:
                proc.stdin.close()

    def _finish(self, run_id: str, error: str | None, warning: str | None) -> None:
        with self._idle:
            self._inflight.discard(run_id)
            job = self._jobs.pop(run_id, None)
        if job is None:
            return
        uri = resolve_tracking_uri(job.config.tracking_uri)
        if error is None:
            self.written += 1
            job.result.trace_written = True
            if warning:
                warn_once("artifacts:" + uri, warning)
        else:
            self.failed += 1
            job.result.trace_error = error
            warn_once(
                "write:" + uri,
                f"could not write the trace to MLflow at {uri} ({error.splitlines()[0]}); "
                "the run is not affected. See: configurable-agents observability status",
            )
        job.done.set()
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def close(self) -> None:
        """Stop the writer process (after a flush); it also stops when this process exits."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)


_writer = TraceWriter()


def writer() -> TraceWriter:
    return _writer


def render_run_name(template: str | None, compiled: CompiledWorkflow, result: RunResult) -> str:
    if not template:
        return ""
    from ..config.template import parse_template

    started = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.started_ns / 1e9))
    values = {
        "workflow_name": compiled.name,
        "workflow_version": compiled.workflow.spec.flow.version,
        "timestamp": started,
        "run_id": result.run_id,
        "status": result.status,
    }
    return parse_template(template)[0].render(values)


def submit(
    compiled: CompiledWorkflow, result: RunResult, config: MlflowConfig, tags: dict[str, str]
) -> None:
    """Queue a finished run for tracing (or write it now when ``async_logging`` is off)."""
    result.trace_id = f"tr-{result.run_id}"
    result.trace_uri = resolve_tracking_uri(config.tracking_uri)
    name = render_run_name(config.run_name, compiled, result)
    if name:
        tags = {**tags, "run_name": name}
    job = _Job(WorkflowInfo.of(compiled), result, config, tags)
    _writer.submit(job)
    if not config.async_logging:
        job.done.wait()


def flush(timeout: float | None = None) -> bool:
    """Wait until every queued trace is written; ``False`` if ``timeout`` seconds passed."""
    return _writer.flush(timeout)


def flush_timeout() -> float:
    try:
        return float(os.environ.get(FLUSH_TIMEOUT_ENV, DEFAULT_FLUSH_TIMEOUT))
    except ValueError:
        return DEFAULT_FLUSH_TIMEOUT


def flush_at_exit() -> None:
    if _writer.abandoned:
        return
    if _writer.pending and not _writer.flush(flush_timeout()):
        _writer.abandoned = True
        log.warning(
            "%d trace(s) were not written to MLflow within %.0f s and are lost "
            "(set %s to wait longer)",
            _writer.pending,
            flush_timeout(),
            FLUSH_TIMEOUT_ENV,
        )
        return
    _writer.close()

"""Hand a finished run to the observability tiers its workflow turns on.

``OBSERVER`` is installed into ``run.hooks`` by the package. It is the only observability code
on the caller's path, and it does little: it appends the run to the durable local spool (one
SQLite commit, well under a millisecond) for each sink the workflow names (MLflow store,
OTLP endpoint, Pushgateway), makes sure a drainer serves those sinks (starting a detached one
if none does), and, when this process keeps Prometheus metrics (the server), hands the run to
a metrics thread. Pricing, building the span tree and writing it happen in the drainer.

Nothing here raises into a run: a tier that cannot start logs one warning (per key and minute)
and the run's result is returned as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .run_record import budget_tags, parse_traceparent, per_tags, render_run_name, spool_snapshot

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from ..run.result import RunResult
    from .trace import SinkPlan
    from .trace.spool import SinkRef, Spool

log = logging.getLogger("configurable_agents.observe")
WARN_EVERY = 60.0
_warned: dict[str, float] = {}
_warn_lock = threading.Lock()


def warn_once(key: str, message: str, every: float | None = None) -> None:
    """Log ``message`` once per ``key`` (again after ``every`` seconds, when given)."""
    now = time.monotonic()
    with _warn_lock:
        last = _warned.get(key)
        if last is not None and (every is None or now - last < every):
            return
        _warned[key] = now
    log.warning(message)


class _MetricsThread:
    """Records finished runs into this process's Prometheus registry off the caller's path
    (pricing a run costs ~0.25 ms per call)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[RunResult | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def submit(self, result: RunResult) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="configurable-agents-metrics", daemon=True
                )
                self._thread.start()
            self._pending += 1
        self._queue.put(result)

    def _loop(self) -> None:
        from .metrics import metrics

        while True:
            result = self._queue.get()
            if result is None:
                return
            try:
                metrics().run_finished(result)
            except Exception as exc:  # noqa: BLE001 - metrics never fail a run
                warn_once("metrics-record", f"could not record Prometheus metrics: {exc}")
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def flush(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True


class Observer:
    """The observability tiers, as ``run.hooks`` sees them."""

    def __init__(self) -> None:
        self.metrics = _MetricsThread()
        from .redact import Background

        self.redactor = Background()
        # ``warn`` judges run here, after the run is spooled; their verdicts follow (judging.py)
        self.judging = Background("configurable-agents-judges")
        # Spooled by this process, per spool: record id -> the result (weakly), so a flush
        # that sees the record written can set ``trace_written``.
        self._records: dict[Path, dict[int, weakref.ref[RunResult]]] = {}
        self._probes: dict[str, tuple[float, str | None]] = {}  # sink key -> (when, error)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ run.hooks

    def run_started(self, compiled: CompiledWorkflow, trace: bool | None) -> bool:
        """Check (in the background) that the run's sinks can be reached, and count the run
        as active in the Prometheus metrics when they are on; say if so."""
        with contextlib.suppress(Exception):  # a probe is a courtesy
            self._probe(compiled, trace)
        from . import metrics

        if not metrics.enabled():
            return False
        try:
            metrics.metrics().run_started(compiled.name)
        except Exception as exc:  # noqa: BLE001 - observability never fails a run
            warn_once("metrics", f"Prometheus metrics are off for this process: {exc}")
            return False
        return True

    def run_finished(
        self,
        compiled: CompiledWorkflow,
        result: RunResult,
        started: Any,
        *,
        trace: bool | None,
        tags: Mapping[str, str] | None,
        context: Mapping[str, str] | None,
    ) -> None:
        if started:
            self.metrics.submit(result)
        judged_after = any(not j.spec.in_run for j in compiled.judges)
        hold = 0.0
        if judged_after and compiled.workflow.spec.config.observability.mlflow.async_logging:
            from .judging import JUDGE_HOLD

            hold = JUDGE_HOLD  # the record waits for the verdicts (judging.replace_record)
        try:  # spooled at once, with or without warn judges: durable when this returns
            self._spool(compiled, result, trace, dict(tags or {}), context, hold)
        except Exception as exc:  # noqa: BLE001 - observability never fails a run
            warn_once("spool", f"tracing is off for this run: {type(exc).__name__}: {exc}", 60)
        if judged_after:
            from .judging import judge_then_assess, mark_pending

            mark_pending(result)
            self.judging.submit(
                lambda: judge_then_assess(self, compiled, result, started, trace, tags)
            )

    # ------------------------------------------------------------------ budgets

    def budget_ledger_path(self, compiled: CompiledWorkflow) -> Path:
        """The spend ledger of ``compiled``'s budgets: ``budget.db`` next to its spool
        (``$CONFIGURABLE_AGENTS_BUDGET_LEDGER`` wins)."""
        from ..run.ledger import LEDGER_ENV

        if os.environ.get(LEDGER_ENV):
            return Path(os.environ[LEDGER_ENV]).expanduser().resolve()
        obs = compiled.workflow.spec.config.observability
        return _spool_path(obs.spool.path, compiled.workflow.file).with_name("budget.db")

    def budget_spend(
        self, compiled: CompiledWorkflow, all_workflows: bool, start_ms: int, end_ms: int
    ) -> float | None:
        """USD the workflow's tracking store holds for a window (None: it traces nowhere)."""
        from .budget_store import store_spend

        return store_spend(compiled, all_workflows, start_ms, end_ms)

    # ------------------------------------------------------------------ spooling

    def _spool(
        self,
        compiled: CompiledWorkflow,
        result: RunResult,
        trace: bool | None,
        tags: dict[str, str],
        context: Mapping[str, str] | None,
        hold: float = 0.0,
    ) -> None:
        from .trace.spans import WorkflowInfo

        obs = compiled.workflow.spec.config.observability
        plan = _plan(compiled, trace)
        if not plan.sinks:
            return
        if plan.mlflow is not None and "{" in plan.mlflow.experiment:
            plan = per_tags(plan, tags)
        if result.budget:
            tags = {**tags, **budget_tags(result.budget)}
        info = compiled.__dict__.get("_ca_workflow_info")
        if info is None:  # once per compiled workflow, as the sink plan
            info = compiled.__dict__["_ca_workflow_info"] = WorkflowInfo.of(compiled)
        data: dict[str, Any] = {
            "workflow": info,
            "tags": tags,
            "parent": parse_traceparent(context) if context else None,
        }
        if plan.mlflow is not None:
            result.trace_id = f"tr-{result.run_id}"
            result.trace_uri = plan.mlflow.uri
            name = render_run_name(obs.mlflow.run_name, compiled, result)
            if name:
                data["tags"] = {**tags, "run_name": name}
            data["mlflow"] = {
                "artifact_level": obs.mlflow.artifact_level,
                "log_artifacts": obs.mlflow.log_artifacts,
            }
        data["result"] = spool_snapshot(result)
        if obs.mlflow.redact_pii:
            from .redact import Session, engine_for

            redact = obs.mlflow.redact

            def redact_and_append() -> None:
                session = Session(engine_for(redact))  # built once per configuration
                data["result"] = session.value(data["result"])
                data["tags"] = session.value(data["tags"])
                self._append(compiled, result, plan, data, hold)

            if obs.mlflow.async_logging or plan.mlflow is None:
                self.redactor.submit(redact_and_append)
            else:
                redact_and_append()
            return
        self._append(compiled, result, plan, data, hold)

    def _append(
        self,
        compiled: CompiledWorkflow,
        result: RunResult,
        plan: SinkPlan,
        data: dict[str, Any],
        hold: float = 0.0,
    ) -> None:
        from .trace.spool import FORMAT, SpoolRecord, open_spool

        obs = compiled.workflow.spec.config.observability
        spool = open_spool(
            _spool_path(obs.spool.path, compiled.workflow.file), obs.spool.max_mb * 1024 * 1024
        )
        record_id = spool.append(SpoolRecord(FORMAT, "run", data), plan.sinks, hold)
        with self._lock:
            self._records.setdefault(spool.path, {})[record_id] = weakref.ref(result)
        if hold:  # for the warn judges' thread, which puts the judged run in its place
            result.__dict__["_ca_spooled"] = (spool, record_id, data, plan.sinks)
        sink_ids = [spool.sink_id(s) for s in plan.sinks]
        from .trace.drain import ensure_drained

        ensure_drained(spool, sink_ids)
        self._warn_unreachable(plan.sinks)
        self._warn_if_failing(spool, plan.sinks)
        if plan.mlflow is not None and not obs.mlflow.async_logging:
            from .trace import wait_for

            if not wait_for(spool, [record_id], flush_timeout()):
                warn_once(
                    "sync-timeout:" + plan.mlflow.sink().key,
                    f"async_logging is off, but the trace of run {result.run_id} was not "
                    f"written within {flush_timeout():.0f} s; it stays in the spool",
                    WARN_EVERY,
                )
            else:
                result.trace_written = True

    def _probe(self, compiled: CompiledWorkflow, trace: bool | None) -> None:
        """Probe each MLflow store the run will go to once a minute, in a thread, so a store
        that is down is reported by the run that finds it (not only by the drainer)."""
        from .trace.targets import probe

        target = _plan(compiled, trace).mlflow
        if target is None:
            return
        key = target.sink().key
        now = time.monotonic()
        with self._lock:
            last = self._probes.get(key)
            if last is not None and now - last[0] < WARN_EVERY:
                return
            self._probes[key] = (now, None)

        def run() -> None:
            error = probe(target.uri)
            with self._lock:
                self._probes[key] = (now, error)

        threading.Thread(target=run, name="configurable-agents-probe", daemon=True).start()

    def _warn_unreachable(self, sinks: list[SinkRef]) -> None:
        for sink in sinks:
            with self._lock:
                found = self._probes.get(sink.key)
            if found is None or found[1] is None:
                continue
            from .trace.targets import mask_url

            target = json.loads(sink.target)
            warn_once(
                "sink:" + sink.key,
                f"the MLflow store {mask_url(target['uri'])} cannot be written ({found[1]}); "
                "the trace is kept in the local spool and written when the store is back. "
                "See: configurable-agents observability status",
                WARN_EVERY,
            )

    def _warn_if_failing(self, spool: Spool, sinks: list[SinkRef]) -> None:
        """One warning per sink and minute while a sink keeps failing (cheap: one query,
        at most once a second)."""
        from .trace.drain import describe

        now = time.monotonic()
        key = f"check:{spool.path}"
        with self._lock:
            if now - _warned.get(key, -1.0) < 1.0:
                return
            _warned[key] = now
        wanted = {s.key for s in sinks}
        for state in spool.sinks():
            if state.key not in wanted or not state.pending or not state.last_error_at:
                continue
            if state.last_success_at and state.last_success_at > state.last_error_at:
                continue
            warn_once(
                "sink:" + state.key,
                f"{state.pending} trace(s) are waiting in the spool for {describe(state)}: "
                f"{(state.last_error or '').splitlines()[0]}. They are written when it is "
                "back; see: configurable-agents observability status",
                WARN_EVERY,
            )

    def spooled(self) -> dict[Path, list[int]]:
        with self._lock:
            return {path: list(ids) for path, ids in self._records.items()}

    def replaced(self, path: Path, new: int, result: RunResult) -> None:
        """Record ``new`` took the place of one of ``result``'s (whose id stays: a flush
        waits for both, and a record gone has nothing pending)."""
        with self._lock:
            self._records.setdefault(path, {})[new] = weakref.ref(result)

    def written(self, path: Path, ids: list[int]) -> None:
        """These records reached every sink: mark their results and forget them."""
        with self._lock:
            records = self._records.get(path, {})
            for record_id in ids:
                ref = records.pop(record_id, None)
                result = ref() if ref is not None else None
                if result is not None and result.trace_id:
                    result.trace_written = True


_spool_paths: dict[tuple[str | None, ...], Path] = {}


def _spool_path(configured: str | None, workflow_file: str | os.PathLike[str] | None) -> Path:
    """``workflow_spool_path`` for a workflow file (its folder is the base of a relative
    setting), remembered per setting and environment (resolving a path touches the file
    system, and even pathlib's parsing costs: the caller's path should not pay either on
    every run)."""
    from .trace.spool import SPOOL_ENV, STATE_DIR_ENV, workflow_spool_path

    env = os.environ
    key = (
        configured,
        os.fspath(workflow_file) if workflow_file else None,
        env.get(SPOOL_ENV),
        env.get(STATE_DIR_ENV),
        env.get("XDG_STATE_HOME"),
        env.get("HOME"),
        os.getcwd() if configured or env.get(SPOOL_ENV) else None,
    )
    found = _spool_paths.get(key)
    if found is None:
        base = Path(workflow_file).parent if workflow_file else None
        found = _spool_paths[key] = workflow_spool_path(configured, base)
    return found


def _plan(compiled: CompiledWorkflow, trace: bool | None) -> SinkPlan:
    """Where runs of ``compiled`` go, worked out once per compiled workflow and ``trace``
    flag (settings changed on a compiled workflow after its first run are not seen)."""
    plans: dict[bool | None, SinkPlan] = compiled.__dict__.setdefault("_ca_sink_plans", {})
    plan = plans.get(trace)
    if plan is None:
        from .trace import sinks_for

        obs = compiled.workflow.spec.config.observability
        plan = plans[trace] = sinks_for(obs, trace=trace)
    return plan


OBSERVER = Observer()

FLUSH_TIMEOUT_ENV = "CONFIGURABLE_AGENTS_FLUSH_TIMEOUT"
DEFAULT_FLUSH_TIMEOUT = 30.0


def flush_timeout() -> float:
    import os

    try:
        return float(os.environ.get(FLUSH_TIMEOUT_ENV, DEFAULT_FLUSH_TIMEOUT))
    except ValueError:
        return DEFAULT_FLUSH_TIMEOUT

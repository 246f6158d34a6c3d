"""``warn`` judges: run after the run, off the caller's path, once its trace is spooled.

``Observer.run_finished`` spools every run at once (durable when ``run_workflow`` returns,
judges or not). The record of a run whose workflow has ``warn`` judges is spooled with a
*hold* (``JUDGE_HOLD`` seconds in which no drainer takes it) and the run goes to a background
thread (``Observer.judging``, one per process, worked in order). The thread runs the judges
(``run.judges.judge_after_run``: their model calls go through the same provider layer,
recorded on their own ``NodeRun``), adds the verdicts to ``result.judges``, records their
``judge_score`` metrics, calls ``when_judged`` callbacks (the server's run record), and then
puts the judged run in the place of the held record (``Spool.replace``, one transaction), so
every sink gets one complete trace: the ``judge`` spans with their tokens and cost in the
trace's totals, ``node.quality_score`` on the judged span, the feedback assessments, OTLP's
spans and the Pushgateway's ``judge_score``.

When the held record is no longer there to replace for the MLflow sink (a drainer took it:
the hold ran out behind a long queue of judges, or another process ran ``flush``), the
verdicts follow as a small ``assessments`` record instead (``trace.assessments``): feedback
assessments and ``quality_assessment.json`` on the trace already written (without judge spans).
A run whose judges give no verdict only has its hold lifted.

``configurable_agents.flush()`` (and the exit handler, and the CLI) waits for this thread
first, bounded by the flush timeout. A process killed while its judges run keeps its traces:
they are written when the hold runs out, without those judges' verdicts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from ..run.result import RunResult
    from .dispatch import Observer
    from .trace.spool import SinkRef

log = logging.getLogger("configurable_agents.observe")
_lock = threading.Lock()
JUDGE_HOLD = 120.0  # seconds a judged run's record waits in the spool for its verdicts


def mark_pending(result: RunResult) -> None:
    """``result``'s warn judges are queued (``when_judged`` waits for them)."""
    result.__dict__["_judging"] = True


def when_judged(result: RunResult, callback: Callable[[RunResult], None]) -> None:
    """Call ``callback(result)`` once its warn judges have given their verdicts (now, when
    they already have or the run has none; otherwise from the judges' thread)."""
    with _lock:
        pending = result.__dict__.get("_judging", False)
        if pending:
            result.__dict__.setdefault("_on_judged", []).append(callback)
    if not pending:
        callback(result)


def judge_then_assess(
    observer: Observer,
    compiled: CompiledWorkflow,
    result: RunResult,
    started: Any,
    trace: bool | None,
    tags: Mapping[str, str] | None,
) -> None:
    from ..run.judges import judge_after_run
    from .dispatch import warn_once

    verdicts: list[Any] = []
    try:
        verdicts = judge_after_run(compiled, result)
    except Exception as exc:  # noqa: BLE001 - judges never fail a run or its trace
        warn_once("judges", f"the warn judges could not run: {type(exc).__name__}: {exc}", 60)
    if verdicts:
        result.judges = [*(result.judges or []), *verdicts]
        if started:
            record_metrics(compiled.name, verdicts)
    with _lock:
        result.__dict__["_judging"] = False
        callbacks = result.__dict__.pop("_on_judged", [])
    for callback in callbacks:
        try:
            callback(result)
        except Exception as exc:  # noqa: BLE001 - e.g. the server's run record
            log.warning("after the judges: %s: %s", type(exc).__name__, exc)

    def trace_verdicts() -> None:
        entry = result.__dict__.pop("_ca_spooled", None)
        try:
            if entry is not None:
                replace_record(observer, compiled, result, entry, verdicts, trace, tags)
            elif verdicts:
                spool_assessments(observer, compiled, result, verdicts, trace, tags)
        except Exception as exc:  # noqa: BLE001 - observability never fails a run
            warn_once("assess", f"judges' verdicts not traced: {type(exc).__name__}: {exc}", 60)

    settings = compiled.workflow.spec.config.observability.mlflow
    if settings.redact_pii and settings.async_logging:
        observer.redactor.submit(trace_verdicts)  # in order: after the run's own record
    else:
        trace_verdicts()


def replace_record(
    observer: Observer,
    compiled: CompiledWorkflow,
    result: RunResult,
    entry: tuple[Any, int, dict[str, Any], list[SinkRef]],
    verdicts: list[Any],
    trace: bool | None,
    tags: Mapping[str, str] | None,
) -> None:
    """Put the judged run in the place of its held spool record (see the module doc)."""
    from .run_record import spool_snapshot
    from .trace.drain import ensure_drained
    from .trace.spool import FORMAT, SpoolRecord

    spool, old_id, data, sinks = entry
    record: SpoolRecord | None = None
    if verdicts:
        snapshot = spool_snapshot(result)
        settings = compiled.workflow.spec.config.observability.mlflow
        if settings.redact_pii:
            from .redact import Session, engine_for

            snapshot = Session(engine_for(settings.redact)).value(snapshot)
        record = SpoolRecord(FORMAT, "run", {**data, "result": snapshot})
    new_id, others = spool.replace(old_id, record, sinks)
    if new_id is not None:
        observer.replaced(spool.path, new_id, result)
        ensure_drained(spool, [spool.sink_id(s) for s in sinks if s not in others])
    if verdicts and any(s.kind == "mlflow" for s in others):
        spool_assessments(observer, compiled, result, verdicts, trace, tags)


def spool_assessments(
    observer: Observer,
    compiled: CompiledWorkflow,
    result: RunResult,
    verdicts: list[Any],
    trace: bool | None,
    tags: Mapping[str, str] | None,
) -> None:
    """Append the ``assessments`` record of ``verdicts`` for the run's MLflow sink (redacted
    as the run's record is, and after it when the run's record is redacted in the
    background)."""
    from .dispatch import _plan
    from .run_record import per_tags, spool_snapshot
    from .trace.assessments import record_data
    from .trace.spans import WorkflowInfo

    plan = _plan(compiled, trace)
    if plan.mlflow is None:
        return
    if "{" in plan.mlflow.experiment:
        plan = per_tags(plan, dict(tags or {}))
    assert plan.mlflow is not None
    sink = plan.mlflow.sink()
    settings = compiled.workflow.spec.config.observability.mlflow
    snapshot = spool_snapshot(result)
    info = WorkflowInfo.of(compiled)

    def build_and_append() -> None:
        data = record_data(info, snapshot, verdicts)
        data["artifact_level"] = settings.artifact_level
        data["log_artifacts"] = settings.log_artifacts
        if settings.redact_pii:
            from .redact import Session, engine_for

            session = Session(engine_for(settings.redact))
            data["feedbacks"] = session.value(data["feedbacks"])
            data["quality"] = session.value(data["quality"])
        append_assessments(observer, compiled, result, sink, data)

    build_and_append()  # (on the redactor's thread when the run's record is redacted there)


def append_assessments(
    observer: Observer,
    compiled: CompiledWorkflow,
    result: RunResult,
    sink: SinkRef,
    data: dict[str, Any],
) -> None:
    """Spool the warn judges' verdicts of a run (kind ``assessments``) for its MLflow sink;
    ``flush()`` waits for the record as for the run's."""
    import weakref

    from .dispatch import _spool_path
    from .trace.assessments import KIND
    from .trace.drain import ensure_drained
    from .trace.spool import FORMAT, SpoolRecord, open_spool

    obs = compiled.workflow.spec.config.observability
    spool = open_spool(
        _spool_path(obs.spool.path, compiled.workflow.file), obs.spool.max_mb * 1024 * 1024
    )
    record_id = spool.append(SpoolRecord(FORMAT, KIND, data), [sink])
    with observer._lock:
        observer._records.setdefault(spool.path, {})[record_id] = weakref.ref(result)
    ensure_drained(spool, [spool.sink_id(sink)])


def record_metrics(workflow: str, verdicts: list[Any]) -> None:
    from . import metrics

    try:
        metrics.metrics().judged(workflow, verdicts)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a run
        log.debug("judge metrics not recorded: %s", exc)

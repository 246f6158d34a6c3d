"""``warn`` judges: run after the run, off the caller's path, before its trace is spooled.

``Observer.run_finished`` hands a run whose workflow has ``warn`` judges to a background
thread (``Observer.judging``, one per process, worked in order) and returns: the caller's
path gains one queue put. The thread runs the judges (``run.judges.judge_after_run``: their
model calls go through the same provider layer, recorded on their own ``NodeRun``), adds the
verdicts to ``result.judges``, records their ``judge_score`` metrics, and then spools the run
exactly as ``run_finished`` would have: the verdicts reach the store as feedback assessments
in the same transaction as the trace, so a trace is never seen half-judged.

``configurable_agents.flush()`` (and the exit handler) waits for this thread first. The cost:
a process killed while its judges run loses those runs' traces (they were not spooled yet),
as with ``redact_pii``.
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

log = logging.getLogger("configurable_agents.observe")
_lock = threading.Lock()


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


def judge_then_spool(
    observer: Observer,
    compiled: CompiledWorkflow,
    result: RunResult,
    started: Any,
    trace: bool | None,
    tags: Mapping[str, str] | None,
    context: Mapping[str, str] | None,
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
    try:
        observer._spool(compiled, result, trace, dict(tags or {}), context)
    except Exception as exc:  # noqa: BLE001 - observability never fails a run
        warn_once("spool", f"tracing is off for this run: {type(exc).__name__}: {exc}", 60)


def record_metrics(workflow: str, verdicts: list[Any]) -> None:
    from . import metrics

    try:
        metrics.metrics().judged(workflow, verdicts)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a run
        log.debug("judge metrics not recorded: %s", exc)

"""Observability: where finished runs go after the run layer reports them (``dispatch``):
the span tree spooled and drained into MLflow and OTLP (``trace``), reports over the stored
traces (``report``), and Prometheus metrics, alert rules and dashboards (``metrics``).
Nothing here ever fails a run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pricing import CostSummary, ModelCost, price_usage
    from ..run.cost import summarize_cost

_LAZY = {
    "CostSummary": "..pricing",
    "ModelCost": "..pricing",
    "price_usage": "..pricing",
    "summarize_cost": "..run.cost",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flush(timeout: float | None = None) -> bool:
    """Write every run this process spooled to each of its sinks (MLflow, OTLP, Pushgateway)
    now: drain in this process the sinks no other drainer serves, wait for the others.
    ``False`` when ``timeout`` seconds (default ``$CONFIGURABLE_AGENTS_FLUSH_TIMEOUT``, 30)
    passed first: the runs stay in the spool and are written later. Also waits for this
    process's metrics thread."""
    import time

    from .dispatch import OBSERVER, flush_timeout
    from .trace import wait_for
    from .trace.drain import Drainer
    from .trace.spool import open_spool

    limit = flush_timeout() if timeout is None else timeout
    deadline = time.monotonic() + limit
    done = OBSERVER.judging.flush(limit)  # warn judges first: they spool their verdicts
    done = OBSERVER.metrics.flush(max(0.0, deadline - time.monotonic())) and done
    done = OBSERVER.redactor.flush(max(0.0, deadline - time.monotonic())) and done
    for path, ids in OBSERVER.spooled().items():
        if not ids:
            continue
        spool = open_spool(path)
        if spool.pending(ids):
            drainer = Drainer(spool)
            drainer.warn = True
            drainer.drain(max(0.0, deadline - time.monotonic()), ignore_backoff=False)
        remaining = max(0.0, deadline - time.monotonic())
        if wait_for(spool, ids, remaining):
            OBSERVER.written(path, ids)
        else:
            done = False
    return done


__all__ = ["CostSummary", "ModelCost", "flush", "price_usage", "summarize_cost"]

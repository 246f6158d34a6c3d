"""Observability: run cost (``cost``), the span tree of a run (``spans``), MLflow traces
written in the background (``tracing``, ``mlflow_trace``, ``artifacts``) and reports over
them (``reports``). Nothing here ever fails a run.
"""

from __future__ import annotations

from .cost import CostSummary, ModelCost, price_usage, summarize_cost


def flush(timeout: float | None = None) -> bool:
    """Wait until every trace queued by this process is written to MLflow and exported over
    OTLP (``False`` when ``timeout`` seconds passed first)."""
    import sys
    import time

    from .tracing import flush as _flush

    deadline = None if timeout is None else time.monotonic() + timeout
    done = _flush(timeout)
    otel = sys.modules.get(f"{__name__}.otel")  # loaded by the first run that exports
    if otel is not None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = otel.flush(remaining) and done
    return bool(done)


__all__ = ["CostSummary", "ModelCost", "flush", "price_usage", "summarize_cost"]

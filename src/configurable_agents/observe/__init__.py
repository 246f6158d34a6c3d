"""Observability: run cost (``cost``), the span tree of a run (``spans``), MLflow traces
written in the background (``tracing``, ``mlflow_trace``, ``artifacts``) and reports over
them (``reports``). Nothing here ever fails a run.
"""

from __future__ import annotations

from .cost import CostSummary, ModelCost, price_usage, summarize_cost


def flush(timeout: float | None = None) -> bool:
    """Wait until every trace queued by this process is written (``False`` on timeout)."""
    from .tracing import flush as _flush

    return _flush(timeout)


__all__ = ["CostSummary", "ModelCost", "flush", "price_usage", "summarize_cost"]

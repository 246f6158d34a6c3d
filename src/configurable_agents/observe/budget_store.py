"""What a workflow's tracking store has spent in a budget window (``run.budget`` seeds its
spend ledger with it once per window)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow


def store_spend(
    compiled: CompiledWorkflow, all_workflows: bool, start_ms: int, end_ms: int
) -> float | None:
    """USD of the traces in ``[start_ms, end_ms)`` of the workflow's MLflow store (every
    workflow's with ``all_workflows``); None when the workflow does not trace to MLflow, 0 when
    the store does not exist yet. Raises when the store cannot be read."""
    mlflow = compiled.workflow.spec.config.observability.mlflow
    if not mlflow.enabled:
        return None
    from .report.reports import cost_report
    from .trace.targets import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow.tracking_uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            return 0.0
    report = cost_report(
        uri,
        workflow=None if all_workflows else compiled.name,
        start=start_ms,
        end=end_ms,
    )
    return report.total_cost

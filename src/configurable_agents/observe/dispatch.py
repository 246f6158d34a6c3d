"""Hand a finished run to the observability tiers its workflow turns on.

This is the only observability code on the caller's path, and it does almost nothing: it
queues the run for the background writer (``observe.tracing``). Pricing, building the span
tree and writing it happen there. Nothing here raises: a tier that cannot start logs one
warning and the run's result is returned as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from ..run.result import RunResult

log = logging.getLogger("configurable_agents.observe")
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def run_starting(compiled: CompiledWorkflow) -> bool:
    """Count the run as active in the Prometheus metrics, when they are on; say if so."""
    from . import metrics

    if not (metrics.enabled() or compiled.workflow.spec.config.observability.prometheus.enabled):
        return False
    try:
        metrics.metrics().run_started(compiled.name)
    except Exception as exc:  # noqa: BLE001 - observability never fails a run
        warn_once("metrics", f"Prometheus metrics are off for this process: {exc}")
        return False
    return True


def observe_run(
    compiled: CompiledWorkflow,
    result: RunResult,
    *,
    trace: bool | None = None,
    tags: Mapping[str, str] | None = None,
    metered: bool = False,
) -> None:
    if metered:
        try:
            from . import metrics

            metrics.metrics().run_finished(result)
        except Exception as exc:  # noqa: BLE001 - observability never fails a run
            warn_once("metrics-record", f"could not record Prometheus metrics: {exc}")
    otel_config = compiled.workflow.spec.config.observability.opentelemetry
    if otel_config.enabled:
        try:
            from .otel import submit as submit_otel

            submit_otel(compiled, result, otel_config, tags)
        except Exception as exc:  # noqa: BLE001 - observability never fails a run
            warn_once("otel-submit", f"OpenTelemetry export is off for this process: {exc}")
    config = compiled.workflow.spec.config.observability.mlflow
    if not (config.enabled if trace is None else trace):
        return
    try:
        from .tracing import submit

        submit(compiled, result, config, dict(tags or {}))
    except Exception as exc:  # noqa: BLE001 - observability never fails a run
        warn_once("submit", f"MLflow tracing is off for this process: {exc}")

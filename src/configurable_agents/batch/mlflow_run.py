"""A batch as an MLflow run, when its workflow traces to MLflow.

The run is created (or, on ``--resume``, found by its ``ca.batch_id`` tag) in the workflow's
experiment before the first row starts; every row's trace carries its id (the
``ca.mlflow_run`` tag, which the trace writer turns into MLflow's ``mlflow.sourceRun``
metadata), so the MLflow UI lists a batch's traces under its run. At the end the run gets the
summary as metrics (success rate, cost, tokens, p50/p95 latency, rows/s) and
``batch_summary.json``, and ends FINISHED (KILLED when the batch stopped early).

This is the batch layer's own bookkeeping, off the rows' path: the executor never starts
MLflow runs. Nothing here fails a batch: a store that cannot be written gets one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from .summary import BatchSummary

log = logging.getLogger("configurable_agents.observe")
RUN_TAG = "ca.mlflow_run"


class BatchRun:
    def __init__(self, uri: str, run_id: str) -> None:
        self.uri = uri
        self.run_id = run_id

    def finish(self, summary: BatchSummary, params: Mapping[str, Any]) -> None:
        try:
            _finish(self, summary, params)
        except Exception as exc:  # noqa: BLE001 - the batch's results are what count
            log.warning("could not record the batch in MLflow run %s: %s", self.run_id, exc)


def start_batch_run(
    compiled: CompiledWorkflow, trace: bool | None, batch_id: str, name: str
) -> BatchRun | None:
    """The MLflow run of batch ``batch_id`` (None when its rows are not traced to MLflow)."""
    from ..observe.trace import sinks_for

    plan = sinks_for(compiled.workflow.spec.config.observability, trace=trace)
    if plan.mlflow is None:
        return None
    try:
        return _start(plan.mlflow.uri, plan.mlflow.experiment, batch_id, name, compiled.name)
    except Exception as exc:  # noqa: BLE001 - traces still go to the store
        log.warning("the batch is not an MLflow run (%s: %s)", type(exc).__name__, exc)
        return None


def _start(uri: str, experiment: str, batch_id: str, name: str, workflow: str) -> BatchRun:
    from mlflow.tracking import MlflowClient

    from ..observe.trace.mlflow_sink import MlflowSink

    sink = MlflowSink(uri, experiment)
    sink.open()  # creates the store and the experiment as the trace writer does
    client = MlflowClient(uri)
    found = client.search_runs(
        [sink.experiment_id], filter_string=f"tags.`ca.batch_id` = '{batch_id}'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(
            sink.experiment_id,
            run_name=name,
            tags={"ca.batch_id": batch_id, "ca.workflow": workflow},
        )
        run_id = run.info.run_id
    return BatchRun(uri, run_id)


def _finish(run: BatchRun, summary: BatchSummary, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(run.uri)
    data = summary.to_dict()
    rows = max(summary.rows, 1)
    values = {
        "rows": summary.rows,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "success_rate": summary.succeeded / rows,
        "cost_usd": summary.cost_usd,
        "total_tokens": summary.total_tokens,
        "latency_p50_ms": summary.p50_ms,
        "latency_p95_ms": summary.p95_ms,
        "rows_per_s": summary.rows_per_second,
    }
    import time

    now = int(time.time() * 1000)
    existing = client.get_run(run.run_id).data.params
    new_params = [
        Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing and v is not None
    ]
    client.log_batch(
        run.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
        params=new_params,
    )
    client.log_dict(run.run_id, data, "batch_summary.json")
    client.set_terminated(run.run_id, "KILLED" if summary.stopped else "FINISHED")

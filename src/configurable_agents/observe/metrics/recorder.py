"""Tier 3: Prometheus metrics for runs, tokens and cost.

==============================  =========  ======================  ==========================
metric                          type       labels                  what
==============================  =========  ======================  ==========================
``workflow_runs_total``         counter    workflow, status        finished runs
``llm_tokens_total``            counter    model, type             tokens (type: input/output)
``llm_cost_usd_total``          counter    model                   list-price cost in USD
``workflow_duration_seconds``   histogram  workflow                run wall time
``node_duration_seconds``       histogram  workflow, node          node wall time (per visit)
``active_workflows``            gauge      workflow                runs in progress
``budget_refusals_total``       counter    workflow, budget        calls refused by a budget
``judge_score``                 histogram  workflow, judge         judges' scores (bool: 0/1)
==============================  =========  ======================  ==========================

Label values are bounded: workflow and node names come from workflow files, models from their
``llm`` settings, status is ``succeeded`` or ``failed``. The metrics live in their own registry
(``registry()``), which the HTTP server exposes on ``/metrics``; recording into it is switched on
by ``enable()`` (the server does this). Runs in processes that have no ``/metrics`` (the CLI,
scripts) reach Prometheus through a Pushgateway instead, as cumulative totals kept in the
spool (``observe.metrics.push``), when their workflow sets ``observability.prometheus.enabled``
and ``pushgateway_url``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...exceptions import MissingExtraError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ...run.result import RunResult

log = logging.getLogger("configurable_agents.observe")

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SCORE_BUCKETS = (0, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10)
NODE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
HELP = {
    "workflow_runs": "Finished workflow runs.",
    "llm_tokens": "LLM tokens reported by providers.",
    "llm_cost_usd": "LLM cost in USD at list price.",
    "workflow_duration_seconds": "Wall time of a workflow run.",
    "node_duration_seconds": "Wall time of one node execution.",
    "active_workflows": "Workflow runs in progress.",
    "budget_refusals": "Model calls refused by config.budget (action: block).",
    "judge_score": "Scores given by the workflow's judges (pass/fail judges: 1 or 0).",
}


class Metrics:
    """The metric families, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise MissingExtraError("prometheus-client", "server", "Prometheus metrics") from exc
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "workflow_runs", HELP["workflow_runs"], ["workflow", "status"], registry=r
        )
        self.tokens = Counter("llm_tokens", HELP["llm_tokens"], ["model", "type"], registry=r)
        self.cost = Counter("llm_cost_usd", HELP["llm_cost_usd"], ["model"], registry=r)
        self.duration = Histogram(
            "workflow_duration_seconds",
            HELP["workflow_duration_seconds"],
            ["workflow"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.node_duration = Histogram(
            "node_duration_seconds",
            HELP["node_duration_seconds"],
            ["workflow", "node"],
            buckets=NODE_BUCKETS,
            registry=r,
        )
        self.active = Gauge("active_workflows", HELP["active_workflows"], ["workflow"], registry=r)
        self.budget_refusals = Counter(
            "budget_refusals", HELP["budget_refusals"], ["workflow", "budget"], registry=r
        )

        self.judge_score = Histogram(
            "judge_score",
            HELP["judge_score"],
            ["workflow", "judge"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )

    def judged(self, workflow: str, verdicts: list[Any]) -> None:
        """Record judges' verdicts (those that could score)."""
        for verdict in verdicts:
            if verdict.score is not None:
                self.judge_score.labels(workflow, verdict.name).observe(verdict.score)

    def run_started(self, workflow: str) -> None:
        self.active.labels(workflow).inc()

    def run_finished(self, result: RunResult) -> None:
        """Record a finished run (the active gauge was raised by ``run_started``)."""
        from ...run.cost import peek_cost

        workflow = result.workflow
        self.active.labels(workflow).dec()
        self.runs.labels(workflow, result.status).inc()
        self.duration.labels(workflow).observe(result.duration_ms / 1000)
        for node in result.nodes:
            self.node_duration.labels(workflow, node.node).observe(node.duration_ms / 1000)
        if result.budget and result.budget.get("refused"):
            self.budget_refusals.labels(workflow, str(result.budget["refused"])).inc()
        cost = peek_cost(result)
        for model, entry in cost.by_model.items():
            self.tokens.labels(model, "input").inc(entry.input_tokens)
            self.tokens.labels(model, "output").inc(entry.output_tokens)
            self.cost.labels(model).inc(entry.cost_usd)
        # the block / retry verdicts (warn ones are recorded by observe.judging)
        self.judged(workflow, [j for j in result.judges or [] if j.phase == "in_run"])


_metrics: Metrics | None = None
_enabled = False


def enable() -> Metrics:
    """Record every run of this process from now on; return the metrics."""
    global _enabled
    _enabled = True
    return metrics()


def enabled() -> bool:
    return _enabled


def metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def registry() -> CollectorRegistry:
    return metrics().registry

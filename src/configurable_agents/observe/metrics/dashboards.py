"""Tier 3: Grafana dashboards over the Prometheus metrics, built with grafana-foundation-sdk.

Three dashboards, each a JSON file Grafana can provision or import:

=============================  =======================  =======================================
file                           variables                panels
=============================  =======================  =======================================
``workflow-performance.json``  datasource, workflow     runs, failed share, p95 run time, runs
                                                        in progress; throughput, p50/p95/p99,
                                                        failed share and run-time heatmap
``llm-usage-cost.json``        datasource, model        spend, tokens, cost per run, spend per
                                                        hour; tokens/s, spend by model
``node-latency.json``          datasource, workflow,    p50/p95 per node, executions, share of
                               node                     workflow time, mean time, heatmap
=============================  =======================  =======================================

Every panel reads the Prometheus data source chosen in ``$datasource`` (default: Grafana's
default Prometheus data source), so the files work in any Grafana. Token and cost metrics are
labelled by model, not by workflow, hence ``$model`` rather than ``$workflow`` on the LLM
dashboard. Queries use ``$__rate_interval`` for rates and ``$__range`` for totals over the
selected time range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import MissingExtraError
from .panels import (
    bargauge_panel,
    dashboard,
    heatmap_panel,
    label_variable,
    promql,
    stat_panel,
    thresholds,
    timeseries_panel,
)

if TYPE_CHECKING:
    from grafana_foundation_sdk.builders.dashboard import Dashboard

__all__ = [
    "DASHBOARDS",
    "build_dashboards",
    "dashboard_json",
    "panel_queries",
    "write_dashboards",
]

TAG = "configurable-agents"

# File name -> (uid, title); the builders are below.
DASHBOARDS: dict[str, tuple[str, str]] = {
    "workflow-performance.json": ("ca-workflow-performance", "Workflow performance"),
    "llm-usage-cost.json": ("ca-llm-usage-cost", "LLM usage and cost"),
    "node-latency.json": ("ca-node-latency", "Per-node latency"),
}


def _sdk() -> None:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "grafana-foundation-sdk", "server", "Generating Grafana dashboards"
        ) from exc


def _dashboard(file: str, description: str) -> Dashboard:
    uid, title = DASHBOARDS[file]
    return dashboard(uid, title, description, TAG)


# --------------------------------------------------------------------------- the dashboards

_WF = 'workflow=~"$workflow"'


def workflow_performance() -> Dashboard:
    """Runs, failures, run time and concurrency per workflow."""
    runs = f"workflow_runs_total{{{_WF}}}"
    failed = f'workflow_runs_total{{{_WF}, status="failed"}}'
    buckets = f"workflow_duration_seconds_bucket{{{_WF}}}"
    rate_all = f"sum by (workflow) (rate({runs}[$__rate_interval]))"
    rate_failed = f"sum by (workflow) (rate({failed}[$__rate_interval]))"

    def quantile(q: str, ref: str) -> Any:
        expr = f"histogram_quantile({q}, sum by (workflow, le) (rate({buckets}[$__rate_interval])))"
        return promql(expr, f"p{q[2:].ljust(2, '0')} {{{{workflow}}}}", ref=ref)

    return (
        _dashboard(
            "workflow-performance.json",
            "Throughput, failures and run time of configurable-agents workflows.",
        )
        .with_variable(
            label_variable("workflow", "Workflow", "label_values(workflow_runs_total, workflow)")
        )
        .with_panel(
            stat_panel(
                "Runs",
                "Runs finished in the selected time range.",
                "short",
                f"sum(increase({runs}[$__range]))",
                decimals=0,
            )
        )
        .with_panel(
            stat_panel(
                "Failed runs",
                "Share of the runs finished in the time range that failed.",
                "percentunit",
                f"(sum(increase({failed}[$__range])) or vector(0))"
                f" / sum(increase({runs}[$__range]))",
            ).thresholds(thresholds((None, "green"), (0.01, "orange"), (0.05, "red")))
        )
        .with_panel(
            stat_panel(
                "p95 run time",
                "95th percentile of run wall time over the time range.",
                "s",
                f"histogram_quantile(0.95, sum by (le) (increase({buckets}[$__range])))",
            )
        )
        .with_panel(
            stat_panel(
                "Runs in progress",
                "Runs executing now.",
                "short",
                f"sum(active_workflows{{{_WF}}})",
                decimals=0,
            )
        )
        .with_panel(
            timeseries_panel(
                "Throughput",
                "Finished runs per second, by workflow and status.",
                "ops",
                promql(
                    f"sum by (workflow, status) (rate({runs}[$__rate_interval]))",
                    "{{workflow}} {{status}}",
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Run time",
                "p50, p95 and p99 of run wall time, by workflow.",
                "s",
                quantile("0.5", "A"),
                quantile("0.95", "B"),
                quantile("0.99", "C"),
            )
        )
        .with_panel(
            timeseries_panel(
                "Failed share by workflow",
                "Share of finished runs that failed, by workflow (HighErrorRate watches it).",
                "percentunit",
                promql(
                    f"({rate_failed} or {rate_all} * 0) / ({rate_all} > 0)",
                    "{{workflow}}",
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Runs in progress by workflow",
                "Runs executing, by workflow.",
                "short",
                promql(f"sum by (workflow) (active_workflows{{{_WF}}})", "{{workflow}}"),
            )
        )
        .with_panel(
            heatmap_panel(
                "Run time distribution",
                "How many runs took how long (histogram buckets of run wall time).",
                f"sum by (le) (increase({buckets}[$__rate_interval]))",
            )
        )
    )


def llm_usage_and_cost() -> Dashboard:
    """Tokens and list-price spend per model."""
    model = 'model=~"$model"'
    cost = f"llm_cost_usd_total{{{model}}}"
    tokens = f"llm_tokens_total{{{model}}}"
    return (
        _dashboard(
            "llm-usage-cost.json",
            "Tokens and LLM spend (list price) of configurable-agents workflows, by model.",
        )
        .with_variable(label_variable("model", "Model", "label_values(llm_cost_usd_total, model)"))
        .with_panel(
            stat_panel(
                "Spend",
                "LLM spend at list price in the selected time range.",
                "currencyUSD",
                f"sum(increase({cost}[$__range]))",
            )
        )
        .with_panel(
            stat_panel(
                "Tokens",
                "Input and output tokens in the selected time range.",
                "short",
                f"sum(increase({tokens}[$__range]))",
                decimals=0,
            )
        )
        .with_panel(
            stat_panel(
                "Cost per run",
                "Average spend per finished run, all models and workflows.",
                "currencyUSD",
                "sum(increase(llm_cost_usd_total[$__range]))"
                " / sum(increase(workflow_runs_total[$__range]))",
            )
        )
        .with_panel(
            stat_panel(
                "Spend per hour",
                "Spend rate over the last hour, in USD per hour (CostSpike watches it).",
                "currencyUSD",
                f"sum(rate({cost}[1h])) * 3600",
            )
        )
        .with_panel(
            timeseries_panel(
                "Tokens per second",
                "Tokens per second, by model and type (input, output).",
                "short",
                promql(
                    f"sum by (model, type) (rate({tokens}[$__rate_interval]))",
                    "{{model}} {{type}}",
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Spend per hour by model",
                "Spend rate in USD per hour, by model.",
                "currencyUSD",
                promql(
                    f"sum by (model) (rate({cost}[$__rate_interval])) * 3600",
                    "{{model}}",
                ),
            )
        )
        .with_panel(
            bargauge_panel(
                "Spend by model",
                "Spend in the selected time range, by model.",
                "currencyUSD",
                f"sum by (model) (increase({cost}[$__range]))",
                "{{model}}",
            )
        )
        .with_panel(
            bargauge_panel(
                "Tokens by model",
                "Tokens in the selected time range, by model and type.",
                "short",
                f"sum by (model, type) (increase({tokens}[$__range]))",
                "{{model}} {{type}}",
            )
        )
    )


def node_latency() -> Dashboard:
    """Time per node: percentiles, visits, and each node's share of its workflow's time."""
    sel = f'{_WF}, node=~"$node"'
    buckets = f"node_duration_seconds_bucket{{{sel}}}"
    sums = f"node_duration_seconds_sum{{{sel}}}"
    counts = f"node_duration_seconds_count{{{sel}}}"

    def quantile(q: str) -> Any:
        return promql(
            f"histogram_quantile({q}, sum by (workflow, node, le) "
            f"(rate({buckets}[$__rate_interval])))",
            "{{workflow}} / {{node}}",
        )

    return (
        _dashboard(
            "node-latency.json",
            "Where the time of configurable-agents workflows goes, node by node.",
        )
        .with_variable(
            label_variable("workflow", "Workflow", "label_values(workflow_runs_total, workflow)")
        )
        .with_variable(
            label_variable(
                "node", "Node", f"label_values(node_duration_seconds_count{{{_WF}}}, node)"
            )
        )
        .with_panel(
            timeseries_panel(
                "p95 node time",
                "95th percentile of node wall time (one sample per visit), by node.",
                "s",
                quantile("0.95"),
            )
        )
        .with_panel(
            timeseries_panel(
                "p50 node time",
                "Median node wall time, by node.",
                "s",
                quantile("0.5"),
            )
        )
        .with_panel(
            bargauge_panel(
                "Share of workflow time",
                "Each node's share of the time its workflow spent in nodes, over the time range:"
                " the bottleneck is the longest bar.",
                "percentunit",
                f"sum by (workflow, node) (increase({sums}[$__range]))"
                " / ignoring (node) group_left"
                f" sum by (workflow) (increase(node_duration_seconds_sum{{{_WF}}}[$__range]))",
                "{{workflow}} / {{node}}",
            )
        )
        .with_panel(
            bargauge_panel(
                "Mean node time",
                "Mean wall time per visit over the time range, by node.",
                "s",
                f"sum by (workflow, node) (increase({sums}[$__range]))"
                f" / sum by (workflow, node) (increase({counts}[$__range]))",
                "{{workflow}} / {{node}}",
            )
        )
        .with_panel(
            timeseries_panel(
                "Node executions",
                "Node visits per second (loops visit a node more than once per run).",
                "ops",
                promql(
                    f"sum by (workflow, node) (rate({counts}[$__rate_interval]))",
                    "{{workflow}} / {{node}}",
                ),
                span=24,
            )
        )
        .with_panel(
            heatmap_panel(
                "Node time distribution",
                "How many node visits took how long (histogram buckets of node wall time).",
                f"sum by (le) (increase({buckets}[$__rate_interval]))",
            )
        )
    )


_BUILDERS: dict[str, Callable[[], Dashboard]] = {
    "workflow-performance.json": workflow_performance,
    "llm-usage-cost.json": llm_usage_and_cost,
    "node-latency.json": node_latency,
}


def dashboard_json(builder: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of a dashboard builder."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel.setdefault("id", number)  # stable ids: Grafana links and edits refer to them
    return data


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by file name."""
    _sdk()
    return {file: dashboard_json(build()) for file, build in _BUILDERS.items()}


def write_dashboards(directory: str | Path) -> list[Path]:
    """Write the dashboards as JSON files into ``directory`` (created); return their paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, data in build_dashboards().items():
        path = target / file
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(panel title, target)`` for every query of every panel, rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner.get("title", ""), target))
    return found

"""The data of reports and the arithmetic shared by both ways of reading traces.

``report_sql`` (GROUP BY inside the database) and ``report_rest`` (``search_traces`` and a loop
in Python) each produce the same small ``Groups``; ``build_cost_report`` and
``build_profile_report`` turn them into the reports, so both paths give identical results.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

BUCKET_MS = 15 * 60 * 1000  # grouping unit for periods: every UTC offset is a multiple of it
WORKFLOW_PREFIX = "workflow_"  # root span / trace name = workflow_<flow name>
_DIGITS = 12  # USD amounts in reports keep 12 significant digits
TOKEN_COLUMNS = ["input_tokens", "output_tokens", "total_tokens"]
PICO = 1e12  # costs are summed as integers in this unit (USD 1e-12)


@dataclass(frozen=True)
class Filters:
    """Which traces a report covers. ``start_ms`` inclusive, ``end_ms`` exclusive."""

    experiment: str | None = None
    workflow: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    status: str | None = None  # "succeeded" | "failed"
    tags: tuple[tuple[str, str], ...] = ()  # attribution filters: trace tag == value
    batch: str | None = None  # the ``ca.batch_id`` tag of ``configurable-agents batch`` rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "experiment": self.experiment,
            "workflow": self.workflow,
            "start": _iso_ms(self.start_ms),
            "end": _iso_ms(self.end_ms),
            "status": self.status,
        }
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.batch is not None:
            out["batch"] = self.batch
        return out


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- grouped rows


def to_pico(cost: Any) -> int:
    """One trace's or span's cost (USD, a float or None) in whole picodollars, the unit every
    sum is taken in: ``int(cost * 1e12 + 0.5)``, exactly as the SQL expression
    ``report.store.pico`` computes it in the database. Integer sums do not depend on the order
    of addition, so the span tables, the rollup and search_traces give identical totals."""
    if cost is None:
        return 0
    value = float(cost)
    return int(value * PICO + 0.5) if math.isfinite(value) else 0


@dataclass
class Usage:
    """Cost (in picodollars) and tokens summed over a group."""

    cost_pico: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @property
    def cost(self) -> float:
        """USD."""
        return self.cost_pico / PICO

    def add(self, cost_pico: Any, input_tokens: Any, output_tokens: Any, total_tokens: Any) -> None:
        self.cost_pico += int(cost_pico or 0)
        self.input_tokens += int(input_tokens or 0)
        self.output_tokens += int(output_tokens or 0)
        self.total_tokens += int(total_tokens or 0)


@dataclass
class TraceGroup:
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    duration_ms: int = 0  # summed run time (the traces' execution time)
    usage: Usage = field(default_factory=Usage)


@dataclass
class CallGroup:
    calls: int = 0
    usage: Usage = field(default_factory=Usage)


@dataclass
class Groups:
    """What a backend hands over: small grouped sums, never one row per trace.

    ``traces`` is keyed by (workflow, period bucket start in ms or None); ``models`` by model;
    ``nodes`` by (workflow, node id). For profiles also node durations (ns, one per visit)
    and retries per node.
    """

    traces: dict[tuple[str, int | None], TraceGroup] = field(default_factory=dict)
    models: dict[str, CallGroup] = field(default_factory=dict)
    nodes: dict[tuple[str, str], CallGroup] = field(default_factory=dict)
    durations: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    retries: dict[tuple[str, str], int] = field(default_factory=dict)


def workflow_of(trace_name: str | None) -> str:
    name = trace_name or ""
    return name[len(WORKFLOW_PREFIX) :] if name.startswith(WORKFLOW_PREFIX) else name


def bucket_of(timestamp_ms: int) -> int:
    return timestamp_ms - timestamp_ms % BUCKET_MS


# --------------------------------------------------------------------------- cost report


def _usd(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}") + 0.0


@dataclass
class WorkflowCost:
    workflow: str
    runs: int
    succeeded: int
    failed: int
    cost: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    avg_cost_per_run: float


@dataclass
class ModelUsage:
    model: str
    calls: int
    cost: float
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass
class NodeCost:
    workflow: str
    node: str
    calls: int  # node visits
    cost: float
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass
class PeriodCost:
    period: str  # 2026-01-31, 2026-W05 or 2026-01
    start: str  # first day, ISO date
    runs: int
    succeeded: int
    failed: int
    cost: float
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass
class CostReport:
    """Cost over the selected traces (USD). ``by_model`` / ``by_node`` only with a breakdown,
    ``periods`` only with ``aggregate_by``."""

    tracking_uri: str
    filters: dict[str, Any]
    runs: int
    succeeded: int
    failed: int
    total_cost: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    avg_cost_per_run: float
    avg_tokens_per_run: float
    by_workflow: list[WorkflowCost]
    by_model: list[ModelUsage] | None = None
    by_node: list[NodeCost] | None = None
    aggregate_by: str | None = None
    periods: list[PeriodCost] | None = None
    # where the numbers came from ("rollup", "spans" or "search_traces"); not part of the report
    source: str = field(default="", compare=False)
    by_tag: list[dict[str, Any]] | None = None  # --by user|team|tenant|cost_center
    recommendations: list[dict[str, Any]] | None = None  # --recommend (report.advice)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["source"]
        for key in ("by_model", "by_node", "aggregate_by", "periods", "recommendations"):
            if data[key] is None:
                del data[key]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def csv_rows(self) -> tuple[list[str], list[list[Any]]]:
        """One flat table. With periods: one row per period. Otherwise one ``total`` row, then
        one row per workflow, model and node (``dimension`` says which; ``runs`` is traces for
        total/workflow rows, model calls for model rows and visits for node rows)."""
        if self.periods is not None:
            header = ["period", "start", "runs", "succeeded", "failed", "cost_usd"]
            header += TOKEN_COLUMNS
            return header, [
                [p.period, p.start, p.runs, p.succeeded, p.failed, p.cost, *_tokens(p)]
                for p in self.periods
            ]
        header = ["dimension", "name", "cost_usd", "runs", *TOKEN_COLUMNS]
        rows: list[list[Any]] = [["total", "", self.total_cost, self.runs, *_tokens(self)]]
        rows += [["workflow", w.workflow, w.cost, w.runs, *_tokens(w)] for w in self.by_workflow]
        rows += [["model", m.model, m.cost, m.calls, *_tokens(m)] for m in self.by_model or []]
        rows += [
            ["node", f"{n.workflow}/{n.node}", n.cost, n.calls, *_tokens(n)]
            for n in self.by_node or []
        ]
        return header, rows

    def to_csv(self) -> str:
        return _csv_text(*self.csv_rows())


def _csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return out.getvalue()


def _period_label(day: dt.date, aggregate_by: str) -> tuple[str, dt.date]:
    if aggregate_by == "daily":
        return day.isoformat(), day
    if aggregate_by == "weekly":
        year, week, weekday = day.isocalendar()
        return f"{year}-W{week:02d}", day - dt.timedelta(days=weekday - 1)
    return f"{day.year}-{day.month:02d}", day.replace(day=1)


def build_cost_report(
    groups: Groups,
    tracking_uri: str,
    filters: Filters,
    *,
    breakdown: bool,
    aggregate_by: str | None,
) -> CostReport:
    total = TraceGroup()
    workflows: dict[str, TraceGroup] = {}
    periods: dict[str, tuple[dt.date, TraceGroup]] = {}
    for (workflow, bucket), g in sorted(groups.traces.items(), key=lambda kv: _key(kv[0])):
        for target in (total, workflows.setdefault(workflow, TraceGroup())):
            _merge(target, g)
        if aggregate_by is not None and bucket is not None:
            day = dt.datetime.fromtimestamp(bucket / 1000).date()
            label, first = _period_label(day, aggregate_by)
            _merge(periods.setdefault(label, (first, TraceGroup()))[1], g)
    runs = total.runs
    by_workflow = [
        WorkflowCost(
            name,
            g.runs,
            g.succeeded,
            g.failed,
            _usd(g.usage.cost),
            g.usage.input_tokens,
            g.usage.output_tokens,
            g.usage.total_tokens,
            _usd(g.usage.cost / g.runs) if g.runs else 0.0,
        )
        for name, g in sorted(workflows.items(), key=lambda kv: (-kv[1].usage.cost, kv[0]))
    ]
    report = CostReport(
        tracking_uri=tracking_uri,
        filters={**filters.to_dict(), "breakdown": breakdown},
        runs=runs,
        succeeded=total.succeeded,
        failed=total.failed,
        total_cost=_usd(total.usage.cost),
        input_tokens=total.usage.input_tokens,
        output_tokens=total.usage.output_tokens,
        total_tokens=total.usage.total_tokens,
        avg_cost_per_run=_usd(total.usage.cost / runs) if runs else 0.0,
        avg_tokens_per_run=round(total.usage.total_tokens / runs, 3) if runs else 0.0,
        by_workflow=by_workflow,
    )
    if breakdown:
        report.by_model = [
            ModelUsage(model, c.calls, _usd(c.usage.cost), *_tokens(c.usage))
            for model, c in sorted(groups.models.items(), key=lambda kv: (-kv[1].usage.cost, kv[0]))
        ]
        report.by_node = [
            NodeCost(wf, node, c.calls, _usd(c.usage.cost), *_tokens(c.usage))
            for (wf, node), c in sorted(
                groups.nodes.items(), key=lambda kv: (-kv[1].usage.cost, kv[0])
            )
        ]
    if aggregate_by is not None:
        report.aggregate_by = aggregate_by
        report.periods = [
            PeriodCost(
                label,
                first.isoformat(),
                g.runs,
                g.succeeded,
                g.failed,
                _usd(g.usage.cost),
                *_tokens(g.usage),
            )
            for label, (first, g) in sorted(periods.items(), key=lambda kv: kv[1][0])
        ]
    return report


def _key(key: tuple[str, int | None]) -> tuple[str, int]:
    return key[0], -1 if key[1] is None else key[1]


def _merge(target: TraceGroup, g: TraceGroup) -> None:
    target.runs += g.runs
    target.succeeded += g.succeeded
    target.failed += g.failed
    target.duration_ms += g.duration_ms
    target.usage.add(
        g.usage.cost_pico, g.usage.input_tokens, g.usage.output_tokens, g.usage.total_tokens
    )


def _tokens(u: Any) -> tuple[int, int, int]:
    """(input, output, total) tokens of anything with those three attributes."""
    return u.input_tokens, u.output_tokens, u.total_tokens


# --------------------------------------------------------------------------- profile report


@dataclass
class NodeProfile:
    workflow: str
    node: str
    calls: int  # node visits
    p50_ms: float
    p95_ms: float
    max_ms: float
    total_ms: float
    share: float  # of the summed run time, 0..1
    retries: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float


@dataclass
class ProfileReport:
    """Where run time goes, per node, over the selected traces."""

    tracking_uri: str
    filters: dict[str, Any]
    runs: int
    total_run_ms: float
    nodes: list[NodeProfile]
    bottleneck: NodeProfile | None
    source: str = field(default="", compare=False)  # as in CostReport

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["source"]
        if self.bottleneck is not None:
            data["bottleneck"] = {
                "workflow": self.bottleneck.workflow,
                "node": self.bottleneck.node,
                "share": self.bottleneck.share,
            }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def csv_rows(self) -> tuple[list[str], list[list[Any]]]:
        header = ["workflow", "node", "calls", "p50_ms", "p95_ms", "max_ms", "total_ms", "share"]
        header += ["retries", *TOKEN_COLUMNS, "cost_usd"]
        rows = [
            [
                *(n.workflow, n.node, n.calls, n.p50_ms, n.p95_ms, n.max_ms, n.total_ms, n.share),
                *(n.retries, *_tokens(n), n.cost),
            ]
            for n in self.nodes
        ]
        return header, rows

    def to_csv(self) -> str:
        return _csv_text(*self.csv_rows())


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), ``q`` in 0..1."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def build_profile_report(groups: Groups, tracking_uri: str, filters: Filters) -> ProfileReport:
    runs = sum(g.runs for g in groups.traces.values())
    run_ns = sum(g.duration_ms for g in groups.traces.values()) * 1_000_000
    nodes = []
    keys = set(groups.durations) | set(groups.nodes)
    for key in keys:
        durations = sorted(groups.durations.get(key, []))
        usage = groups.nodes.get(key, CallGroup()).usage
        total_ns = sum(durations)
        nodes.append(
            NodeProfile(
                workflow=key[0],
                node=key[1],
                calls=len(durations),
                p50_ms=_ms(percentile(durations, 0.5)),
                p95_ms=_ms(percentile(durations, 0.95)),
                max_ms=_ms(durations[-1] if durations else 0),
                total_ms=_ms(total_ns),
                share=round(total_ns / run_ns, 4) if run_ns else 0.0,
                retries=groups.retries.get(key, 0),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                cost=_usd(usage.cost),
            )
        )
    nodes.sort(key=lambda n: (-n.total_ms, n.workflow, n.node))
    return ProfileReport(
        tracking_uri=tracking_uri,
        filters=filters.to_dict(),
        runs=runs,
        total_run_ms=_ms(run_ns),
        nodes=nodes,
        bottleneck=nodes[0] if nodes and nodes[0].total_ms > 0 else None,
    )

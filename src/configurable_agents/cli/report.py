"""``report costs``, ``report profile`` and ``report index``.

Two typer sub-apps, registered on the main app as ``report`` and ``observability``. Data goes
to stdout (rich tables, or JSON/CSV with ``--format``) or to ``-o FILE``; messages go to
stderr. Exit codes: 0 ok, 2 bad input (dates, filters, a missing store, MLflow not installed).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import guard, stderr_console

if TYPE_CHECKING:
    from ..observe.report.reports import CostReport, ProfileReport

report_app = typer.Typer(
    help="Reports over the traces in an MLflow store: what runs cost and where time goes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_URI = "sqlite:///mlflow.db"
INDEX_TIP_RUNS = 10_000  # suggest ``report index`` from this many traces on


class Period(StrEnum):
    today = "today"
    yesterday = "yesterday"
    last_7_days = "last_7_days"
    last_30_days = "last_30_days"
    this_month = "this_month"


class Status(StrEnum):
    success = "success"
    failure = "failure"
    succeeded = "succeeded"
    failed = "failed"


class Aggregate(StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class Format(StrEnum):
    json = "json"
    csv = "csv"


TrackingUri = Annotated[
    str,
    typer.Option(
        "--tracking-uri",
        help="The MLflow store: sqlite:///file.db (relative to here), postgresql://…, http(s)://…",
    ),
]
ExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", help="Only traces in this experiment (by name).")
]
WorkflowOpt = Annotated[
    str | None, typer.Option("--workflow", help="Only traces of this workflow (flow name).")
]
PeriodOpt = Annotated[
    Period | None, typer.Option("--period", help="A named period, in local time.")
]
StartOpt = Annotated[
    str | None, typer.Option("--start-date", help="From this day (YYYY-MM-DD), local time.")
]
EndOpt = Annotated[
    str | None, typer.Option("--end-date", help="Up to and including this day (YYYY-MM-DD).")
]
StatusOpt = Annotated[
    Status | None, typer.Option("--status", help="Only succeeded or only failed runs.")
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
]
FormatOpt = Annotated[
    Format | None,
    typer.Option(
        "--format",
        help="json or csv (default for -o: json, or csv for a .csv file; without -o: tables).",
    ),
]
BatchOpt = Annotated[
    str | None,
    typer.Option("--batch", help="Only the rows of this batch (its id, from `batch`)."),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the traceback of internal errors.")
]


def _filters(
    experiment: str | None,
    workflow: str | None,
    period: Period | None,
    start_date: str | None,
    end_date: str | None,
    status: Status | None,
    batch: str | None = None,
) -> dict[str, Any]:
    from ..observe.report.reports import resolve_period

    start, end = resolve_period(period.value if period else None, start_date, end_date)
    return {
        "experiment": experiment,
        "workflow": workflow,
        "start": start,
        "end": end,
        "status": status.value if status else None,
        "batch": batch,
    }


def _emit(
    report: CostReport | ProfileReport,
    output: Path | None,
    fmt: Format | None,
    render: Any,
) -> None:
    from ..observe.report.reports import write_report

    err = stderr_console()
    if output is not None:
        chosen = fmt.value if fmt else ("csv" if output.suffix.lower() == ".csv" else "json")
        write_report(report, output, chosen)
        err.print(f"wrote {escape(str(output))} ({chosen}, {report.runs} run(s))")
    elif fmt is not None:
        text = report.to_csv() if fmt is Format.csv else report.to_json() + "\n"
        typer.echo(text, nl=False)
    else:
        render(report, _stdout())
    if report.runs == 0:
        err.print("[yellow]no traces match[/yellow] (check --tracking-uri and the filters)")


def _stdout() -> Console:
    """Tables on stdout: the terminal's width, or 120 columns into a pipe or file."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 120)


def _warnings() -> None:
    """Our warnings (e.g. a store at an MLflow schema revision the report SQL does not know)
    once each on stderr, as the other commands print them."""
    import logging

    from .common import WarningHandler

    logger = logging.getLogger("configurable_agents.observe")
    if not any(isinstance(h, WarningHandler) for h in logger.handlers):
        logger.addHandler(WarningHandler(stderr_console()))
        logger.propagate = False


def _index_tip(report: CostReport | ProfileReport) -> None:
    """Suggest ``report index`` on a big store when it would make this report faster: the
    rollup does not cover the store (costs), or the SQLite span indexes are missing."""
    if report.runs < INDEX_TIP_RUNS or report.source == "search_traces":
        return
    uri = report.tracking_uri
    why = None
    if report.source == "spans-uncovered":
        why = "rolls up the traces written without it, so cost reports take milliseconds"
    elif report.source.startswith("spans"):
        from ..observe.report.sql import missing_report_indexes

        try:
            missing = missing_report_indexes(uri)
        except Exception:  # noqa: BLE001 - only a tip
            return
        if missing:
            why = "makes breakdowns and profiles of this store much faster"
    if why:
        stderr_console().print(
            f"[dim]tip: `configurable-agents report index --tracking-uri {escape(uri)}` {why} "
            "(once, a few seconds per 100 000 traces)[/dim]"
        )


class ByTag(StrEnum):
    user = "user"
    team = "team"
    tenant = "tenant"
    cost_center = "cost_center"


@report_app.command("costs")
def costs(
    tracking_uri: TrackingUri = DEFAULT_URI,
    experiment: ExperimentOpt = None,
    workflow: WorkflowOpt = None,
    period: PeriodOpt = None,
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    status: StatusOpt = None,
    batch: BatchOpt = None,
    breakdown: Annotated[
        bool, typer.Option("--breakdown", help="Also cost by model and by node.")
    ] = False,
    aggregate_by: Annotated[
        Aggregate | None, typer.Option("--aggregate-by", help="One row per day, week or month.")
    ] = None,
    by: Annotated[
        ByTag | None,
        typer.Option("--by", help="Also cost per value of this attribution tag."),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only runs tagged user=…")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Only runs tagged team=…")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only runs tagged tenant=…")
    ] = None,
    cost_center: Annotated[
        str | None, typer.Option("--cost-center", help="Only runs tagged cost_center=…")
    ] = None,
    recommend: Annotated[
        bool,
        typer.Option(
            "--recommend",
            help="Also what each node's tokens would cost on cheaper models of its provider "
            "(genai-prices), with its judge results.",
        ),
    ] = False,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """What runs cost: totals, by workflow (and by model and node with --breakdown, by user,
    team, tenant or cost center with --by, cheaper models with --recommend)."""
    from ..observe.report.reports import cost_report

    wanted = {"user": user, "team": team, "tenant": tenant, "cost_center": cost_center}
    with guard(verbose, False):
        _warnings()
        report = cost_report(
            tracking_uri,
            **_filters(experiment, workflow, period, start_date, end_date, status, batch),
            breakdown=breakdown,
            aggregate_by=aggregate_by.value if aggregate_by else None,
            tags={k: v for k, v in wanted.items() if v is not None},
            by=by.value if by else None,
            recommend=recommend,
        )
        _emit(report, output, fmt, print_costs)
        _index_tip(report)


@report_app.command("profile")
def profile(
    tracking_uri: TrackingUri = DEFAULT_URI,
    experiment: ExperimentOpt = None,
    workflow: WorkflowOpt = None,
    period: PeriodOpt = None,
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    status: StatusOpt = None,
    batch: BatchOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Where time goes, per node: calls, p50/p95/max, share of run time, retries; the bottleneck."""
    from ..observe.report.reports import profile_report

    with guard(verbose, False):
        _warnings()
        report = profile_report(
            tracking_uri,
            **_filters(experiment, workflow, period, start_date, end_date, status, batch),
        )
        _emit(report, output, fmt, print_profile)
        _index_tip(report)


@report_app.command("index")
def index(
    tracking_uri: TrackingUri = DEFAULT_URI,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild the whole rollup, not only stale parts.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Make reports fast on a SQL store: the rollup (built from the traces there, and rebuilt
    for experiments it does not cover) and, on SQLite, the span indexes. Safe to run again."""
    from ..observe.report.reports import ensure_report_indexes
    from ..observe.trace.targets import mask_url, resolve_tracking_uri

    with guard(verbose, False):
        done = ensure_report_indexes(tracking_uri, rollup_mode="all" if rebuild else "stale")
        uri = escape(mask_url(resolve_tracking_uri(tracking_uri)))
        if done:
            stderr_console().print(f"done in {uri}: {escape(', '.join(done))}")
        else:
            stderr_console().print(f"nothing to do: {uri} is up to date (or needs nothing)")


# --------------------------------------------------------------------------- rendering


def _usd(value: float) -> str:
    return f"${value:.6f}"


def _int(value: int) -> str:
    return f"{value:,}"


def _selection(report: CostReport | ProfileReport) -> str:
    f = report.filters
    parts = [report.tracking_uri]
    parts.append(f"experiment {f['experiment']}" if f.get("experiment") else "all experiments")
    if f.get("workflow"):
        parts.append(f"workflow {f['workflow']}")
    if f.get("start") or f.get("end"):
        parts.append(f"{_when(f.get('start'))} ≤ start < {_when(f.get('end'))}")
    if f.get("status"):
        parts.append(f"{f['status']} runs only")
    if f.get("batch"):
        parts.append(f"batch {f['batch']}")
    return " · ".join(parts)


def _when(iso: str | None) -> str:
    if iso is None:
        return "…"
    return iso[:10] if iso[10:19] == "T00:00:00" else iso[:19].replace("T", " ")


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 1))
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def print_costs(report: CostReport, out: Console) -> None:
    """The cost report as the guide lays it out: summary, then by workflow / model / node."""
    out.print(f"[dim]{escape(_selection(report))}[/dim]\n")
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in (
        ("Total Cost:", _usd(report.total_cost)),
        ("Total Runs:", _int(report.runs)),
        ("Successful:", _int(report.succeeded)),
        ("Failed:", _int(report.failed)),
        ("Total Tokens:", _int(report.total_tokens)),
        ("Avg Cost/Run:", _usd(report.avg_cost_per_run)),
        ("Avg Tokens/Run:", f"{report.avg_tokens_per_run:,.0f}"),
    ):
        summary.add_row(f"  {label}", value)
    out.print("[bold]Cost Summary:[/bold]")
    out.print(summary)
    if report.by_workflow:
        rows = [
            [
                w.workflow,
                _int(w.runs),
                _int(w.failed),
                _usd(w.cost),
                _int(w.total_tokens),
                _usd(w.avg_cost_per_run),
            ]
            for w in report.by_workflow
        ]
        columns = ["workflow", "runs", "failed", "cost", "tokens", "cost/run"]
        out.print()
        out.print(_table("Cost by Workflow:", columns, rows))
    if report.by_tag is not None:
        by = report.filters.get("by", "tag")
        rows = [
            [r["value"], _int(r["runs"]), _usd(r["total_cost"]), _int(r["total_tokens"])]
            for r in report.by_tag
        ]
        out.print()
        out.print(_table(f"Cost by {by}:", ["value", "runs", "cost", "tokens"], rows))
    if report.by_model:
        rows = [
            [
                m.model or "(unknown)",
                _int(m.calls),
                _usd(m.cost),
                _int(m.input_tokens),
                _int(m.output_tokens),
            ]
            for m in report.by_model
        ]
        out.print()
        out.print(_table("Cost by Model:", ["model", "calls", "cost", "in", "out"], rows))
    if report.by_node:
        rows = [
            [
                f"{n.workflow}/{n.node}",
                _int(n.calls),
                _usd(n.cost),
                _int(n.input_tokens),
                _int(n.output_tokens),
            ]
            for n in report.by_node
        ]
        out.print()
        out.print(_table("Cost by Node:", ["node", "visits", "cost", "in", "out"], rows))
    if report.recommendations is not None:
        from .report_prompts import print_recommendations

        out.print()
        print_recommendations(report.recommendations, out)
    if report.periods is not None:
        title = {"daily": "Day", "weekly": "Week", "monthly": "Month"}[report.aggregate_by or ""]
        rows = [
            [p.period, _int(p.runs), _int(p.failed), _usd(p.cost), _int(p.total_tokens)]
            for p in report.periods
        ]
        out.print()
        out.print(
            _table(f"Cost by {title}:", [title.lower(), "runs", "failed", "cost", "tokens"], rows)
        )


def print_profile(report: ProfileReport, out: Console) -> None:
    out.print(f"[dim]{escape(_selection(report))}[/dim]\n")
    out.print(
        f"[bold]Profile:[/bold] {_int(report.runs)} run(s), "
        f"{report.total_run_ms / 1000:,.3f} s of run time"
    )
    rows = [
        [
            f"{n.workflow}/{n.node}",
            _int(n.calls),
            f"{n.p50_ms:,.1f}",
            f"{n.p95_ms:,.1f}",
            f"{n.max_ms:,.1f}",
            f"{n.share:.1%}",
            _int(n.retries),
            _int(n.total_tokens),
            _usd(n.cost),
        ]
        for n in report.nodes
    ]
    columns = ["node", "calls", "p50 ms", "p95 ms", "max ms", "share", "retries", "tokens"]
    out.print()
    out.print(_table("Time by Node:", [*columns, "cost"], rows))
    b = report.bottleneck
    if b is not None:
        out.print(
            f"\n[bold]Bottleneck:[/bold] {escape(b.node)} ({escape(b.workflow)}), "
            f"{b.share:.1%} of run time, p95 {b.p95_ms:,.1f} ms over {_int(b.calls)} call(s)"
        )

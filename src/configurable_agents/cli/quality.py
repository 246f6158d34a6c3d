"""``report quality``: the judges' verdicts per judge and node (``observe.report.quality``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .common import guard, stderr_console
from .report import (
    DEFAULT_URI,
    BatchOpt,
    EndOpt,
    ExperimentOpt,
    FormatOpt,
    OutputOpt,
    PeriodOpt,
    StartOpt,
    StatusOpt,
    TrackingUri,
    VerboseOpt,
    WorkflowOpt,
    _filters,
    _stdout,
    _table,
    _warnings,
)


def register_quality(report_app: typer.Typer) -> None:
    @report_app.command("quality")
    def quality(
        tracking_uri: TrackingUri = DEFAULT_URI,
        judge: Annotated[
            str | None, typer.Option("--judge", help="Only this judge (its name).")
        ] = None,
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
        """Judges' verdicts per judge and node: runs judged, pass rate, mean / p10, by day."""
        from ..observe.report.quality import quality_report

        with guard(verbose, False):
            _warnings()
            report = quality_report(
                tracking_uri,
                judge=judge,
                **_filters(experiment, workflow, period, start_date, end_date, status, batch),
            )
            err = stderr_console()
            if output is not None:
                chosen = fmt.value if fmt else ("csv" if output.suffix == ".csv" else "json")
                Path(output).write_text(report.to_csv() if chosen == "csv" else report.to_json())
                err.print(f"wrote {escape(str(output))} ({chosen})")
            elif fmt is not None:
                text = report.to_csv() if fmt.value == "csv" else report.to_json() + "\n"
                typer.echo(text, nl=False)
            else:
                print_quality(report, _stdout(), _table)
            if not report.rows:
                err.print("[yellow]no judged traces match[/yellow] (check the filters)")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_quality(report: Any, out: Console, table: Any) -> None:
    out.print(f"[dim]{escape(report.tracking_uri)} · from {report.source}[/dim]\n")
    rows = [
        [
            r.judge,
            r.node or "(outputs)",
            f"{r.runs:,}",
            _pct(r.pass_rate),
            _num(r.mean),
            _num(r.p10),
        ]
        for r in report.rows
    ]
    out.print(table("By judge", ["judge", "node", "runs", "pass", "mean", "p10"], rows))
    trend = [
        [
            r.judge,
            r.node or "(outputs)",
            d["day"],
            f"{d['runs']:,}",
            _pct(d["pass_rate"]),
            _num(d["mean"]),
        ]
        for r in report.rows
        for d in r.by_day[-14:]
    ]
    if trend:
        out.print()
        out.print(
            table("By day (UTC, last 14)", ["judge", "node", "day", "runs", "pass", "mean"], trend)
        )

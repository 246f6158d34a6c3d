"""``report prompts``: registry prompt versions side by side; and the tables of
``report costs --recommend``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .common import guard, stderr_console
from .report import (
    DEFAULT_URI,
    EndOpt,
    ExperimentOpt,
    Format,
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
    _usd,
    _warnings,
    report_app,
)

if TYPE_CHECKING:
    from ..observe.report.prompts import PromptReport


@report_app.command("prompts")
def prompts(
    tracking_uri: TrackingUri = DEFAULT_URI,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Only this prompt name.")] = None,
    min_runs: Annotated[
        int,
        typer.Option(
            "--min-runs",
            min=2,
            help="Judged runs a version needs before it can be named the better one.",
        ),
    ] = 10,
    experiment: ExperimentOpt = None,
    workflow: WorkflowOpt = None,
    period: PeriodOpt = None,
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    status: StatusOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Per registry prompt and version: runs, judge scores, tokens, cost and latency side by
    side, and the better version when the judges' numbers show one."""
    from ..observe.report.prompts import prompt_report

    with guard(verbose, False):
        _warnings()
        chosen = _filters(experiment, workflow, period, start_date, end_date, status)
        chosen.pop("batch")
        report = prompt_report(tracking_uri, prompt=prompt, min_runs=min_runs, **chosen)
        if output is not None:
            output.write_text(report.to_json() + "\n", encoding="utf-8")
            stderr_console().print(f"wrote {escape(str(output))} (json)")
        elif fmt is Format.json:
            typer.echo(report.to_json())
        elif fmt is Format.csv:
            raise typer.BadParameter("report prompts writes json or tables", param_hint="--format")
        else:
            print_prompts(report, _stdout())
        if not report.prompts:
            stderr_console().print(
                "[yellow]no runs on registry prompts match[/yellow] (nodes with prompt_ref; "
                "check --tracking-uri and the filters)"
            )


def print_prompts(report: PromptReport, out: Console) -> None:
    for name, versions in sorted(report.prompts.items()):
        judges = sorted({j for v in versions for j in v.judges})
        columns = ["version", "runs", "nodes", "tokens/run", "cost/run", "latency ms", *judges]
        rows = []
        for v in versions:
            d = v.to_dict()
            cells = [
                f"v{v.version}",
                f"{v.runs:,}",
                ", ".join(d["nodes"]),
                f"{d['avg_tokens']:,.0f}",
                _usd(d["avg_cost_usd"]),
                f"{d['avg_latency_ms']:,.1f}",
            ]
            for judge in judges:
                stats = v.judges.get(judge)
                cells.append(_judge_cell(stats.to_dict()) if stats else "-")
            rows.append(cells)
        out.print(_table(f"Prompt {name}:", columns, rows))
        better = report.recommendations.get(name)
        if better:
            out.print(f"  {escape(better)}")
        out.print()


def _judge_cell(stats: dict[str, Any]) -> str:
    n = stats["runs_judged"]
    if stats["kind"] == "bool":
        return f"{100 * (stats['pass_rate'] or 0):.0f}% pass (n={n})"
    text = f"{stats['mean']:.3g} (n={n})"
    if stats["pass_rate"] is not None:
        text += f", {100 * stats['pass_rate']:.0f}% pass"
    return text


def print_recommendations(rows: list[dict[str, Any]], out: Console) -> None:
    """``report costs --recommend``: one line per cheaper model of each node's provider."""
    table_rows = []
    for r in rows:
        judges = "; ".join(
            f"{name} {_judge_cell(stats)}" for name, stats in sorted(r["judges"].items())
        )
        if not r["suggestions"]:
            why = (
                "no price known"
                if r["current_cost_at_list_price_usd"] is None
                else "no cheaper model"
            )
            table_rows.append(
                [r["node"], r["current_model"], _usd(r["current_cost_usd"]), why, "", "", judges]
            )
            continue
        for s in r["suggestions"]:
            table_rows.append(
                [
                    r["node"],
                    r["current_model"],
                    _usd(r["current_cost_usd"]),
                    s["suggested_model"],
                    _usd(s["estimated_cost_usd"]),
                    f"{s['savings_percentage']:.1f}%",
                    judges,
                ]
            )
    columns = ["node", "model", "cost", "cheaper model", "would cost", "saving", "judges"]
    out.print(_table("Cheaper models (same tokens, genai-prices):", columns, table_rows))
    out.print(
        "  [dim]quality on a cheaper model is unknown until tried: "
        "configurable-agents batch compare WORKFLOW --data … --set NODE.llm.model=MODEL[/dim]"
    )

"""``batch WORKFLOW --data FILE`` and ``batch compare BASELINE CANDIDATE --data FILE``.

``batch`` is a group whose default command runs a batch (``batch WORKFLOW ...`` is
``batch run WORKFLOW ...``), so ``batch compare`` can sit next to it. Exit codes: 0 every row
succeeded, 1 some failed or did not run (``--max-cost``, interrupted), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from .common import EXIT_FAILED, EXIT_OK, guard, install_sigterm, setup_tracing, stderr_console

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..batch.summary import BatchSummary, Tally


class _DefaultRun(TyperGroup):
    """``batch X ...`` runs ``batch run X ...`` unless X names a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(
    cls=_DefaultRun,
    help="Run a workflow over every row of a data file (resumable, parallel, on Ray), or "
    "compare two variants over the same rows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data", "-d", help="JSONL, CSV or Parquet file of rows, or - for JSONL on stdin."
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-c", help="Rows in flight at once.", min=1)
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map", help="Take a state field from a column: field=column (repeatable).", metavar="F=C"
    ),
]
IdOpt = Annotated[
    str | None,
    typer.Option("--id-field", help="A column of unique row ids (default: the 0-based index)."),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Only the first N rows.", min=1)]
EngineOpt = Annotated[
    str, typer.Option("--engine", help="local (threads, or processes for local models) or ray.")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join this Ray cluster (default: start a local Ray)."),
]
RayWorkersOpt = Annotated[
    int | None,
    typer.Option("--ray-workers", help="Ray actors (default: min(concurrency, CPUs)).", min=1),
]
MaxCostOpt = Annotated[
    float | None,
    typer.Option("--max-cost", help="Stop starting rows once the batch has cost this (USD)."),
]
TraceOpt = Annotated[
    bool | None,
    typer.Option(
        "--trace/--no-trace",
        help="Trace the rows to MLflow, or not (default: observability.mlflow.enabled).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON, only.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the traceback of internal errors.")
]


def parse_map(pairs: list[str]) -> dict[str, str]:
    from ..exceptions import InputError, Issue

    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise InputError(
                Issue(f"--map {pair!r} is not field=column", hint="e.g. --map topic=subject")
            )
        out[name.strip()] = column.strip()
    return out


@batch_app.command("run", hidden=True)
def run_command(
    workflow: Annotated[Path, typer.Argument(help="The workflow file (.yaml).")],
    data: DataOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The results file (JSONL).")
    ] = Path("results.jsonl"),
    concurrency: ConcurrencyOpt = 4,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the batch in the results file.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="With --resume: run failed rows again too.")
    ] = False,
    limit: LimitOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_workers: RayWorkersOpt = None,
    id_field: IdOpt = None,
    map_: MapOpt = None,
    max_cost: MaxCostOpt = None,
    trace: TraceOpt = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="A trace tag as key=value (repeatable).", metavar="K=V"),
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run WORKFLOW once per row of --data, writing one result line per row to -o."""
    from ..batch.runner import BatchOptions, run_batch

    console = stderr_console()
    with guard(verbose, as_json):
        opts = BatchOptions(
            workflow=workflow,
            data=data,
            output=output,
            concurrency=concurrency,
            resume=resume or retry_failed,
            retry_failed=retry_failed,
            limit=limit,
            engine=engine,
            ray_address=ray_address,
            ray_workers=ray_workers,
            id_field=id_field,
            mapping=parse_map(map_ or []),
            max_cost=max_cost,
            trace=prepare_tracing(workflow, trace, console),
            tags=parse_tags(tag or []),
        )
        install_sigterm()
        progress = None if as_json else BatchProgress(console)
        summary = run_batch(opts, progress)
        if as_json:
            print(json.dumps(summary.to_dict()))
        else:
            print_summary(summary, Console(highlight=False, soft_wrap=True, emoji=False))
        raise typer.Exit(EXIT_OK if summary.complete else EXIT_FAILED)


def prepare_tracing(workflow: Path, trace: bool | None, console: Console) -> bool | None:
    from ..config import load_workflow

    return setup_tracing(load_workflow(workflow), trace, console)


def parse_tags(pairs: list[str]) -> dict[str, str]:
    from ..exceptions import InputError, Issue

    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(
                Issue(f"--tag {pair!r} is not key=value", hint="write e.g. --tag user=ana")
            )
        tags[key.strip()] = value
    return tags


# --------------------------------------------------------------------------- progress


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} rows/s" if speed else "… rows/s", style="cyan")


class BatchProgress:
    """A rich progress bar on stderr: rows done / failed, rows/s, ETA, cost so far."""

    def __init__(self, console: Console, label: str = "batch") -> None:
        self.console = console
        self.bar = Progress(
            TextColumn(f"[bold]{escape(label)}[/bold]"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
            TextColumn("[red]{task.fields[failed]:,} failed[/red]"),
            _Rate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[cost]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def start(self, total: int, tally: Tally) -> None:
        self.bar.start()
        self.task = self.bar.add_task(
            "batch", total=total, completed=tally.done, failed=tally.failed, cost=_usd(tally)
        )

    def advance(self, line: Mapping[str, Any], tally: Tally) -> None:
        self.bar.update(
            self.task, completed=tally.done, failed=tally.failed, cost=_usd(tally), refresh=False
        )

    def close(self) -> None:
        self.bar.stop()


def _usd(tally: Tally) -> str:
    return f"${tally.cost_usd:.4f}"


def print_summary(summary: BatchSummary, out: Console) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    failed = ", ".join(f"{k} {v:,}" for k, v in summary.failed_by_type.items())
    for label, value in (
        ("Batch:", summary.batch_id),
        ("Workflow:", summary.workflow),
        ("Results:", summary.results),
        ("Rows:", f"{summary.rows:,}"),
        ("Succeeded:", f"{summary.succeeded:,}"),
        ("Failed:", f"{summary.failed:,}" + (f" ({failed})" if failed else "")),
        ("Not run:", f"{summary.pending:,}"),
        ("Tokens:", f"{summary.total_tokens:,}"),
        ("Cost:", f"${summary.cost_usd:.6f}"),
        ("Latency:", f"p50 {summary.p50_ms:,.1f} ms, p95 {summary.p95_ms:,.1f} ms"),
        (
            "This run:",
            f"{summary.ran:,} rows in {summary.seconds:,.1f} s "
            f"({summary.rows_per_second:,.1f} rows/s, engine {summary.engine})",
        ),
    ):
        grid.add_row(f"  {label}", escape(value))
    out.print("[bold]Batch summary:[/bold]")
    out.print(grid)
    err = stderr_console()
    if summary.stopped == "max_cost":
        err.print("[yellow]stopped:[/yellow] --max-cost reached; rows in flight finished")
    elif summary.stopped:
        err.print(f"[yellow]stopped:[/yellow] {escape(summary.stopped)}")
    if summary.pending or (summary.failed and not summary.stopped):
        hint = "--resume" if summary.pending else "--resume --retry-failed"
        err.print(f"[dim]to finish: run the same command with {hint}[/dim]")


# --------------------------------------------------------------------------- compare


@batch_app.command("compare")
def compare_command(
    baseline: Annotated[Path, typer.Argument(help="The baseline workflow (.yaml).")],
    candidate: Annotated[
        Path | None,
        typer.Argument(help="The candidate workflow (default: the baseline with --set)."),
    ] = None,
    data: DataOpt = "",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change the candidate: node.key=value, e.g. write.prompt='...', or a registry "
            "prompt: write.prompt_ref=NAME@VERSION or NAME@ALIAS (repeatable).",
            metavar="NODE.KEY=V",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for both results files.")
    ] = Path("compare"),
    html: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML summary with charts here.")
    ] = None,
    concurrency: ConcurrencyOpt = 4,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish both batches in --output.")
    ] = False,
    limit: LimitOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_workers: RayWorkersOpt = None,
    id_field: IdOpt = None,
    map_: MapOpt = None,
    max_cost: MaxCostOpt = None,
    trace: TraceOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a baseline and a candidate over the same rows and compare them side by side."""
    from ..batch.compare import run_compare
    from ..batch.runner import BatchOptions
    from ..batch.worker import parse_overrides
    from ..exceptions import InputError, Issue

    console = stderr_console()
    with guard(verbose, as_json):
        if not data:
            raise InputError(Issue("--data is required", hint="e.g. --data rows.jsonl"))
        opts = BatchOptions(
            workflow=baseline,
            data=data,
            concurrency=concurrency,
            resume=resume,
            limit=limit,
            engine=engine,
            ray_address=ray_address,
            ray_workers=ray_workers,
            id_field=id_field,
            mapping=parse_map(map_ or []),
            max_cost=max_cost,
            trace=prepare_tracing(baseline, trace, console),
            overrides=parse_overrides(set_ or []),
        )
        install_sigterm()
        progress = None if as_json else (lambda label: BatchProgress(console, label))
        comp = run_compare(opts, candidate, output, progress)
        if html is not None:
            from ..batch.html import write_html

            write_html(comp, html)
        if as_json:
            print(json.dumps(comp.to_dict(), default=str))
        else:
            print_comparison(comp, Console(highlight=False, soft_wrap=True, emoji=False))
            if html is not None:
                console.print(f"wrote {escape(str(html))}")
        complete = not comp.baseline.pending and not comp.candidate.pending
        raise typer.Exit(EXIT_OK if complete else EXIT_FAILED)


def print_comparison(comp: Any, out: Console) -> None:
    from ..batch.html import _fmt

    out.print(f"[bold]baseline:[/bold]  {escape(comp.baseline_label)} ({comp.baseline.batch_id})")
    out.print(f"[bold]candidate:[/bold] {escape(comp.candidate_label)} ({comp.candidate.batch_id})")
    table = Table(box=None, padding=(0, 2), title_justify="left")
    for i, name in enumerate(("measure", "baseline", "candidate", "better")):
        table.add_column(name, justify="left" if i in (0, 3) else "right")
    for m in comp.metrics:
        table.add_row(m.name, _fmt(m.baseline, m.name), _fmt(m.candidate, m.name), m.better or "—")
    out.print()
    out.print(table)
    out.print(
        f"\n{comp.rows:,} rows compared: {comp.fixed:,} fixed, {comp.broken:,} broken, "
        f"{comp.outputs_differ:,} with different outputs, {comp.both_failed:,} failed in both"
    )
    for e in comp.examples[:5]:
        row = json.dumps(e["row"])
        b = json.dumps(e["baseline"], default=str)[:80]
        c = json.dumps(e["candidate"], default=str)[:80]
        out.print(f"  row {escape(row)} ({e['change']}): {escape(b)} → {escape(c)}")
    out.print(f"\n[bold]Better:[/bold] {escape(comp.verdict)}")

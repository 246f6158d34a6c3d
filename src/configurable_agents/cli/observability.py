"""``observability status`` and ``observability flush``: where traces go, what waits in the
local spool, and draining it now.

Exit codes: ``status`` 0 (2 on bad input); ``flush`` 0 when nothing is pending, 1 when traces
are still pending when it gives up (the store is down, or needs a secret only the workflow
file has: pass ``--workflow``), 2 on bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import guard, stderr_console
from .report import DEFAULT_URI, ExperimentOpt, VerboseOpt, _int, _stdout

observability_app = typer.Typer(
    help="Where traces go, what waits in the local spool, and draining it now.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

WorkflowOpt = Annotated[
    Path | None,
    typer.Option("--workflow", help="Read the tracking URI, experiment and spool from this file."),
]
SpoolOpt = Annotated[
    Path | None,
    typer.Option(
        "--spool",
        help="The spool file (default: the workflow's, $CONFIGURABLE_AGENTS_SPOOL, or "
        "spool.db in the state folder).",
    ),
]


def _workflow_settings(workflow: Path) -> tuple[Any, Path]:
    from ..config import load_workflow
    from ..observe.trace.spool import workflow_spool_path

    loaded = load_workflow(workflow)
    obs = loaded.spec.config.observability
    return obs, workflow_spool_path(obs.spool.path, Path(loaded.file).parent)


@observability_app.command("status")
def status(
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri", help=f"The MLflow store (default: the workflow's, or {DEFAULT_URI})."
        ),
    ] = None,
    experiment: ExperimentOpt = None,
    workflow: WorkflowOpt = None,
    spool: SpoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Where traces go, how many arrived in the last 24 h, and what waits in the spool (per
    sink: pending count, oldest pending age, last error)."""
    from ..observe.report.reports import observability_status

    with guard(verbose, as_json):
        enabled = None
        if workflow is not None:
            obs, workflow_spool = _workflow_settings(workflow)
            tracking_uri = tracking_uri or obs.mlflow.tracking_uri
            experiment = experiment or obs.mlflow.experiment_name
            enabled = obs.mlflow.enabled
            spool = spool or workflow_spool
        info = observability_status(tracking_uri or DEFAULT_URI, experiment, spool)
        if enabled is not None:
            info["tracing_enabled"] = enabled
        if as_json:
            typer.echo(json.dumps(info))
        else:
            print_status(info, _stdout())


@observability_app.command("flush")
def flush(
    workflow: WorkflowOpt = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="A store URL with its password, for traces spooled for it (the spool keeps "
            "URLs with the password masked).",
        ),
    ] = None,
    spool: SpoolOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.", min=0)
    ] = 120.0,
    verbose: VerboseOpt = False,
) -> None:
    """Write every pending trace in the spool now (retrying failed sinks at once); exit 0
    when nothing is pending."""
    from ..observe.trace import sinks_for
    from ..observe.trace.drain import Drainer, describe
    from ..observe.trace.spool import open_spool, spool_path
    from ..observe.trace.targets import CREDENTIALS, MlflowTarget, resolve_tracking_uri

    err = stderr_console()
    with guard(verbose, False):
        if workflow is not None:
            obs, workflow_spool = _workflow_settings(workflow)
            sinks_for(obs, trace=True)  # registers secrets
            spool = spool or workflow_spool
        if tracking_uri is not None:
            uri = resolve_tracking_uri(tracking_uri)
            # The experiment is not known here: register the URL for every spooled one.
            path = spool or spool_path()
            if path.exists():
                for state in open_spool(path).sinks():
                    if state.kind == "mlflow":
                        exp = json.loads(state.target)["exp"]
                        target = MlflowTarget(uri, exp)
                        if target.sink().key == state.key:
                            CREDENTIALS.register(target.sink(), {"uri": uri, "exp": exp})
        path = spool or spool_path()
        if not path.exists():
            err.print(f"nothing pending: no spool at {escape(str(path))}")
            raise typer.Exit(0)
        from ..observe.trace.drain import tune_gc
        from ..serve.spooled import KIND, open_record_sink  # the server's spooled records

        tune_gc()
        drainer = Drainer(open_spool(path), factories={KIND: open_record_sink})
        drainer.warn = True
        before = sum(s.pending for s in drainer.spool.sinks())
        drainer.drain(timeout)
        states = drainer.spool.sinks()
        left = [s for s in states if s.pending]
        written = before - sum(s.pending for s in states)
        if not left:
            err.print(f"flushed: {written} delivery(ies) written; nothing pending")
            raise typer.Exit(0)
        for state in left:
            reason = state.last_error.splitlines()[0] if state.last_error else ""
            if drainer.target(state) is None:
                reason = (
                    "its URL or headers carry a secret the spool does not keep: pass "
                    "--workflow FILE or --tracking-uri URL"
                )
            err.print(
                f"[yellow]pending:[/yellow] {state.pending} for {escape(describe(state))}"
                + (f" ({escape(reason)})" if reason else "")
            )
        raise typer.Exit(1)


def print_status(info: dict[str, Any], out: Console) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()

    def row(label: str, value: str) -> None:
        grid.add_row(label, value)

    row("Tracking URI:", escape(info["tracking_uri"]))
    if "tracing_enabled" in info:
        row("Tracing:", "enabled" if info["tracing_enabled"] else "[yellow]disabled[/yellow]")
    if info["experiment"]:
        row("Experiment:", escape(info["experiment"]))
    elif info.get("experiments"):
        row("Experiments:", escape(", ".join(info["experiments"])))
    if info["reachable"]:
        row("Store:", "[green]reachable[/green]")
        row("Traces (24 h):", _int(info["traces_last_24h"] or 0))
    else:
        row("Store:", f"[red]not readable[/red]: {escape(info['error'] or '')}")
        if info.get("hint"):
            row("", f"[dim]{escape(info['hint'])}[/dim]")
    row("Last write:", escape(info["last_success_at"] or "none recorded"))
    if info["last_error"]:
        when = f" (at {info['last_error_at']})" if info["last_error_at"] else ""
        row("Last error:", f"[red]{escape(info['last_error'])}[/red]{escape(when)}")
    else:
        row("Last error:", "none")
    spool = info.get("spool") or {}
    row("Spool:", escape(spool.get("path", "")))
    row("Pending:", _int(spool.get("pending", 0)))
    if spool.get("dropped"):
        row("Dropped:", f"[yellow]{_int(spool['dropped'])}[/yellow] (spool full)")
    out.print(grid)
    sinks = spool.get("sinks") or []
    if sinks:
        table = Table(title="Sinks", title_justify="left", box=None, padding=(0, 1))
        for name in ("sink", "target", "pending", "oldest", "written", "last error"):
            table.add_column(name)
        for s in sinks:
            target = s["target"]
            where = target.get("uri") or target.get("endpoint") or target.get("gateway") or ""
            if s["sink"] == "mlflow":
                where += f" ({target.get('exp')})"
            age = s["oldest_pending_age_s"]
            table.add_row(
                s["sink"],
                escape(where),
                _int(s["pending"]),
                "" if age is None else f"{age:.0f} s",
                _int(s["written"]),
                escape((s["last_error"] or "").splitlines()[0] if s["last_error"] else ""),
            )
        out.print(table)

"""``configurable-agents``: run, validate and describe workflows from the command line.

Exit codes: 0 ok, 1 the run failed, 2 bad input or usage. Problems with the user's file or
inputs are printed one per line as ``file:line: message`` with a hint, never as a traceback;
tracebacks appear only for internal bugs, and only with ``--verbose``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..exceptions import UserError
from .render import Progress, print_result

app = typer.Typer(
    name="configurable-agents",
    help="LLM workflows in one YAML file: validate, run, observe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

WorkflowArg = Annotated[Path, typer.Argument(help="The workflow file (.yaml).", show_default=False)]


def _stderr() -> Console:
    # emoji=False: "wf.yaml:100:" must not print as "wf.yaml💯"
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _print_user_error(err: UserError, console: Console) -> None:
    for issue in err.issues:
        where = issue.location()
        prefix = f"[bold]{escape(where)}:[/bold] " if where else ""
        console.print(f"{prefix}[red]error:[/red] {escape(issue.message)}")
        if issue.hint:
            console.print(f"  [dim]hint:[/dim] {escape(issue.hint)}")
    if len(err.issues) > 1:
        console.print(f"[red]{len(err.issues)} problems found.[/red]")


def _issues_json(err: UserError) -> list[dict[str, Any]]:
    return [
        {"file": i.file, "line": i.line, "message": i.message, "hint": i.hint} for i in err.issues
    ]


@contextmanager
def _guard(verbose: bool, as_json: bool) -> Iterator[None]:
    """Turn every failure into a clear message and the right exit code."""
    console = _stderr()
    try:
        yield
    except UserError as err:
        if as_json:
            print(json.dumps({"status": "invalid", "errors": _issues_json(err)}))
        else:
            _print_user_error(err, console)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        _flush_traces(console)
        raise typer.Exit(143 if _terminated else 130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - an internal bug: say so, never dump on users
        if verbose:
            console.print(traceback.format_exc(), markup=False)
        console.print(
            f"[red]internal error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            "  [dim]this is a bug in configurable-agents; rerun with --verbose for the "
            "traceback and report it[/dim]"
        )
        if as_json:
            print(json.dumps({"status": "error", "error": f"{type(exc).__name__}: {exc}"}))
        raise typer.Exit(EXIT_FAILED) from None


@app.command()
def run(
    workflow: WorkflowArg,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="An input as key=value (repeatable).", metavar="K=V"),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="A JSON object of inputs.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (and nothing else).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show rendered prompts and raw responses.")
    ] = False,
    trace: Annotated[
        bool | None,
        typer.Option(
            "--trace/--no-trace",
            help="Trace this run to MLflow, or not (default: observability.mlflow.enabled).",
            show_default=False,
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="A trace tag as key=value (repeatable), e.g. user=ana team=search.",
            metavar="K=V",
        ),
    ] = None,
) -> None:
    """Run a workflow and print its outputs."""
    from ..config import check_environment, load_workflow
    from ..run import parse_pairs, read_input_file, run_workflow
    from ..run.executor import prepare

    console = _stderr()
    with _guard(verbose, as_json):
        loaded = load_workflow(workflow)
        check_environment(loaded)
        inputs: dict[str, Any] = read_input_file(input_file) if input_file else {}
        inputs.update(parse_pairs(input or []))
        tags = _parse_tags(tag or [])
        compiled = prepare(loaded, check_env=False)
        tracing = _setup_tracing(loaded, trace, console)
        _warn_pending_features(loaded, console, as_json)
        _install_sigterm()
        progress = None if as_json else Progress(console, verbose=verbose)
        try:
            result = run_workflow(
                compiled,
                inputs,
                on_event=progress.event if progress else None,
                trace=tracing,
                tags=tags,
            )
        finally:
            if progress:
                progress.stop()
        from ..observe import summarize_cost

        cost = summarize_cost(result, compiled.price_overrides())
        if result.trace_id:
            _flush_traces(console)
        _push_metrics(loaded, console)
        if as_json:
            data = result.to_dict(detail=verbose)
            data["cost"] = cost.to_dict()
            data["trace_uri"] = result.trace_uri
            data["trace_error"] = result.trace_error
            print(json.dumps(data, default=str))
        else:
            print_result(
                result, cost, Console(highlight=False, soft_wrap=True, emoji=False), console
            )
        raise typer.Exit(EXIT_OK if result.succeeded else EXIT_FAILED)


def _parse_tags(pairs: list[str]) -> dict[str, str]:
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


_terminated = False


def _install_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: it is recorded as interrupted and traces are flushed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: Any) -> None:
        global _terminated
        _terminated = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


class _WarningHandler(logging.Handler):
    """Our observability warnings, printed once each as ``warning: ...`` on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(record.getMessage())}")


def _setup_tracing(loaded: Any, trace: bool | None, console: Console) -> bool | None:
    enabled = loaded.spec.config.observability.mlflow.enabled if trace is None else trace
    logger = logging.getLogger("configurable_agents.observe")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler(console))
        logger.propagate = False
    if not enabled:
        return trace
    # MLflow's own chatter (migrations, retries) is not for the terminal; failures reach the
    # user once, through our warning.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from ..observe.tracing import require_mlflow

    try:
        require_mlflow()
    except ImportError as exc:
        console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}; running without tracing")
        return False
    return trace


def _push_metrics(loaded: Any, console: Console) -> None:
    config = loaded.spec.config.observability.prometheus
    if not (config.enabled and config.pushgateway_url):
        return
    from ..observe import metrics

    error = metrics.push(config.pushgateway_url)
    if error:
        console.print(
            f"[yellow]warning:[/yellow] could not push metrics to {escape(config.pushgateway_url)}"
            f" ({escape(error)}); the run is not affected"
        )


def _flush_traces(console: Console) -> None:
    if "configurable_agents.observe.tracing" not in sys.modules:
        return
    from ..observe import tracing

    writer = tracing.writer()
    if not writer.pending:
        return
    timeout = tracing.flush_timeout()
    if not writer.flush(timeout):
        writer.abandoned = True
        console.print(
            f"[yellow]warning:[/yellow] {writer.pending} trace(s) not written to MLflow after "
            f"{timeout:.0f} s; giving up (set {tracing.FLUSH_TIMEOUT_ENV} to wait longer)"
        )


def _warn_pending_features(loaded: Any, console: Console, as_json: bool) -> None:
    if as_json:
        return
    obs = loaded.spec.config.observability
    if obs.prometheus.enabled and not obs.prometheus.pushgateway_url:
        console.print(
            "[yellow]warning:[/yellow] observability.prometheus is enabled, but a CLI run has "
            "no /metrics endpoint to scrape: set observability.prometheus.pushgateway_url, or "
            "use 'configurable-agents serve'"
        )
    budget = loaded.spec.config.budget
    if any(v is not None for v in (budget.per_run_usd, budget.daily_usd, budget.monthly_usd)):
        console.print(
            "[yellow]warning:[/yellow] config.budget is set, but this version does not enforce "
            "budgets yet; the run's cost is reported, not limited"
        )


@app.command()
def validate(
    workflow: WorkflowArg,
    skip_env_check: Annotated[
        bool,
        typer.Option(
            "--skip-env-check",
            help="Check the file only, not this machine's provider packages and API keys.",
        ),
    ] = False,
) -> None:
    """Check a workflow file (and that its providers can run here) without calling a model."""
    from ..config import check_environment, load_workflow

    with _guard(False, False):
        loaded = load_workflow(workflow)
        if not skip_env_check:
            check_environment(loaded)
        spec = loaded.spec
        providers = sorted(
            {
                (n.llm.provider if n.llm and n.llm.provider else None)
                or spec.config.llm.provider
                or "local"
                for n in spec.nodes
            }
        )
        Console(highlight=False, emoji=False).print(
            f"[green]✓[/green] {escape(str(workflow))} is valid: workflow "
            f"'{escape(spec.flow.name)}' v{escape(spec.flow.version)}, {len(spec.nodes)} "
            f"node(s), {len(spec.edges)} edge(s), provider(s): {', '.join(providers)}"
        )


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of workflow files (for editor completion and checks)."""
    from ..config import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        _stderr().print(f"wrote {escape(str(output))}")
    else:
        print(text)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    command: Callable[..., Any] = typer.main.get_command(app)
    try:
        command(args=argv if argv is not None else sys.argv[1:], prog_name="configurable-agents")
    except SystemExit as exc:
        raise SystemExit(exc.code) from None
    raise SystemExit(0)


def _register() -> None:
    from .deploy import deploy_command
    from .report import observability_app, report_app
    from .serve import serve_command

    app.add_typer(report_app, name="report")
    app.add_typer(observability_app, name="observability")
    app.command("serve")(serve_command)
    app.command("deploy")(deploy_command)


_register()

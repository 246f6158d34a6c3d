"""``configurable-agents``: run, validate and describe workflows from the command line.

Exit codes: 0 ok, 1 the run failed, 2 bad input or usage. Problems with the user's file or
inputs are printed one per line as ``file:line: message`` with a hint, never as a traceback;
tracebacks appear only for internal bugs, and only with ``--verbose``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    WorkflowArg,
    guard,
    install_sigterm,
    setup_tracing,
    stderr_console,
)
from .render import Progress, print_result

app = typer.Typer(
    name="configurable-agents",
    help="LLM workflows in one YAML file: validate, run, observe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
            help="A trace tag as key=value (repeatable), e.g. user=ana team=search; user, "
            "team, tenant and cost_center are what report costs --by and its filters read.",
            metavar="K=V",
        ),
    ] = None,
) -> None:
    """Run a workflow and print its outputs."""
    from ..config import load_workflow
    from ..providers import check_environment
    from ..run import parse_pairs, read_input_file, run_workflow
    from ..run.executor import prepare

    console = stderr_console()
    with guard(verbose, as_json):
        loaded = load_workflow(workflow)
        check_environment(loaded)
        inputs: dict[str, Any] = read_input_file(input_file) if input_file else {}
        inputs.update(parse_pairs(input or []))
        tags = _parse_tags(tag or [])
        from .prompts import show_prompt_warnings

        show_prompt_warnings(console)  # a prompt_ref's fallback, said once
        compiled = prepare(loaded, check_env=False)
        tracing = setup_tracing(loaded, trace, console)
        _warn_pending_features(loaded, console, as_json)
        from .retention import maybe_apply_in_background

        maybe_apply_in_background(loaded)
        install_sigterm()
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
        if any(not j.spec.in_run for j in compiled.judges):  # warn judges: shown with the run
            from ..observe.dispatch import OBSERVER, flush_timeout

            OBSERVER.judging.flush(flush_timeout())
        from ..observe import summarize_cost

        cost = summarize_cost(result, compiled.price_overrides())
        if as_json:
            data = result.to_dict(detail=verbose)
            data["cost"] = cost.to_dict()
            from ..observe.trace.targets import mask_url

            data["trace_uri"] = mask_url(result.trace_uri) if result.trace_uri else None
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
    split: list[str] = []
    for pair in pairs:  # --tag "user=ana team=search" too
        parts = pair.split()
        split += parts if len(parts) > 1 and all("=" in p for p in parts) else [pair]
    for pair in split:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(
                Issue(f"--tag {pair!r} is not key=value", hint="write e.g. --tag user=ana")
            )
        tags[key.strip()] = value
    return tags


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
    from ..config import load_workflow
    from ..providers import check_environment

    with guard(False, False):
        loaded = load_workflow(workflow)
        from ..compile.plan import check_budget, workflow_prices

        check_budget(loaded, workflow_prices(loaded))  # a budget needs prices and max_tokens
        from ..prompts import resolve_prompts
        from .prompts import show_prompt_warnings

        show_prompt_warnings(stderr_console())
        resolve_prompts(loaded)  # prompt_ref: loadable, placeholders are state fields
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
        stderr_console().print(f"wrote {escape(str(output))}")
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
    from .batch import batch_app
    from .deploy import deploy_command
    from .observability import observability_app
    from .prompts import prompts_app
    from .quality import register_quality
    from .report import report_app
    from .report_prompts import prompts as _report_prompts  # noqa: F401 - registers it
    from .retention import retention_app
    from .serve import serve_command

    register_quality(report_app)
    app.add_typer(report_app, name="report")
    app.add_typer(retention_app, name="retention")
    app.add_typer(batch_app, name="batch")
    app.add_typer(observability_app, name="observability")
    app.add_typer(prompts_app, name="prompts")
    app.command("serve")(serve_command)
    app.command("deploy")(deploy_command)


_register()

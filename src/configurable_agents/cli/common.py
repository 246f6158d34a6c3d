"""What every command shares: the workflow argument, exit codes, the error guard (clear
messages and exit codes instead of tracebacks), SIGTERM handling and tracing setup.

The command modules (``app``, ``deploy``, ``report``, ``serve``) import this module; it imports
none of them.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..exceptions import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

WorkflowArg = Annotated[Path, typer.Argument(help="The workflow file (.yaml).", show_default=False)]


def stderr_console() -> Console:
    # emoji=False: "wf.yaml:100:" must not print as "wf.yaml💯"
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def print_user_error(err: UserError, console: Console) -> None:
    for issue in err.issues:
        where = issue.location()
        prefix = f"[bold]{escape(where)}:[/bold] " if where else ""
        console.print(f"{prefix}[red]error:[/red] {escape(issue.message)}")
        if issue.hint:
            console.print(f"  [dim]hint:[/dim] {escape(issue.hint)}")
    if len(err.issues) > 1:
        console.print(f"[red]{len(err.issues)} problems found.[/red]")


def issues_json(err: UserError) -> list[dict[str, Any]]:
    return [
        {"file": i.file, "line": i.line, "message": i.message, "hint": i.hint} for i in err.issues
    ]


@contextmanager
def guard(verbose: bool, as_json: bool) -> Iterator[None]:
    """Turn every failure into a clear message and the right exit code."""
    console = stderr_console()
    try:
        yield
    except UserError as err:
        if as_json:
            print(json.dumps({"status": "invalid", "errors": issues_json(err)}))
        else:
            print_user_error(err, console)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
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


_terminated = False


def install_sigterm() -> None:
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


class WarningHandler(logging.Handler):
    """Our observability warnings, printed once each as ``warning: ...`` on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(record.getMessage())}")


def setup_tracing(loaded: Any, trace: bool | None, console: Console) -> bool | None:
    enabled = loaded.spec.config.observability.mlflow.enabled if trace is None else trace
    logger = logging.getLogger("configurable_agents.observe")
    if not any(isinstance(h, WarningHandler) for h in logger.handlers):
        logger.addHandler(WarningHandler(console))
        logger.propagate = False
    if not enabled:
        return trace
    # MLflow's own chatter (migrations, retries) is not for the terminal; failures reach the
    # user once, through our warning.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:  # not ``import mlflow``: that takes seconds
        from ..exceptions import MissingExtraError

        error = MissingExtraError("mlflow", "mlflow", "MLflow tracing")
        console.print(f"[yellow]warning:[/yellow] {escape(str(error))}; running without tracing")
        return False
    return trace

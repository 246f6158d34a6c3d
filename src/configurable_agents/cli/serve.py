"""``configurable-agents serve WORKFLOW.yaml``: the workflow's HTTP server (uvicorn, one
process). Registered on the main app with ``app.command("serve")(serve_command)``.

The workflow and the run database are checked before the server starts (a bad file exits 2
with the same messages as ``run``). SIGTERM or Ctrl-C stops it gracefully: no new runs, queued
runs fail at once, running ones get ``--grace-seconds`` to finish and are then recorded as
failed, traces are flushed.
"""

from __future__ import annotations

import math
import os
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..exceptions import InputError, Issue, MissingExtraError
from .common import WorkflowArg, guard, setup_tracing, stderr_console

if TYPE_CHECKING:
    from fastapi import FastAPI

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def serve_command(
    workflow: WorkflowArg,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.", min=1, max=65535)] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Run records database (SQLAlchemy URL, e.g. postgresql+psycopg2://u:pw@h/db)."
            "  [default: configurable_agents_runs.db here]",
            show_default=False,
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            "--max-concurrency",
            help="Runs at once; more wait in a queue.  [default: 1 on the local model, else 16]",
            min=1,
            show_default=False,
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body (else 413).", min=1)
    ] = 1_000_000,
    grace_seconds: Annotated[
        float,
        typer.Option(
            "--grace-seconds",
            help="On shutdown, how long running runs may take before they are marked failed.",
            min=0,
        ),
    ] = 30.0,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            help="Replicas on one database: how long after this server stops renewing them "
            "(it crashed or was killed) the others mark its unfinished runs failed.",
            min=0.1,
        ),
    ] = 30.0,
    trace: Annotated[
        bool | None,
        typer.Option(
            "--trace/--no-trace",
            help="Trace runs to MLflow, or not (default: observability.mlflow.enabled).",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's log level (debug, info, warning, ...).")
    ] = "info",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of internal errors.")
    ] = False,
) -> None:
    """Serve a workflow over HTTP: POST /runs, GET /runs/{id}, /health, /metrics, /docs.

    Set CONFIGURABLE_AGENTS_API_KEY to require Authorization: Bearer <key>.
    """
    console = stderr_console()
    with guard(verbose, False):
        try:
            import uvicorn
        except ImportError as exc:
            raise MissingExtraError("uvicorn", "server", "The HTTP server") from exc
        from ..config import load_workflow
        from ..providers import check_environment
        from ..run.executor import prepare
        from ..serve import API_KEY_ENV, RunStore, create_app
        from ..serve.records import describe_url
        from ..serve.runner import default_concurrency

        loaded = load_workflow(workflow)
        check_environment(loaded)
        compiled = prepare(loaded, check_env=False)
        if log_level.lower() not in _LOG_LEVELS:
            raise InputError(
                Issue(f"--log-level {log_level!r} is unknown", hint="use " + ", ".join(_LOG_LEVELS))
            )
        tracing = setup_tracing(loaded, trace, console)
        store = RunStore(database_url, compiled.name, lease_seconds=lease_seconds)
        app = create_app(
            compiled,
            database_url=store.url,
            max_concurrency=max_concurrency,
            max_body_bytes=max_body_bytes,
            trace=tracing,
            grace_seconds=grace_seconds,
            lease_seconds=lease_seconds,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level.lower(),
            access_log=access_log,
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            lifespan="on",
        )
        _log_like_uvicorn(config.log_level)
        store.open()  # fails here, with a clear message, if the database cannot be used
        store.close()  # (and migrates it: the app's store then finds it up to date)
        keyed = bool(os.environ.get(API_KEY_ENV))
        _announce(
            console,
            name=compiled.name,
            version=compiled.workflow.spec.flow.version,
            url=_base_url(host, port),
            database=describe_url(store.url),
            concurrency=max_concurrency or default_concurrency(compiled),
            keyed=keyed,
            key_env=API_KEY_ENV,
            exposed=host not in ("127.0.0.1", "localhost", "::1"),
        )
        _run_server(app, config)


def _log_like_uvicorn(level: Any) -> None:
    """The server's own messages (runs failed at shutdown, records not written) through
    uvicorn's log handler, so they look like its lines."""
    import logging

    ours = logging.getLogger("configurable_agents.serve")
    handlers = logging.getLogger("uvicorn").handlers
    if handlers and not ours.handlers:
        for handler in handlers:
            ours.addHandler(handler)
        ours.propagate = False
    if isinstance(level, str):
        ours.setLevel(level.upper())
    elif isinstance(level, int):
        ours.setLevel(level)


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _announce(
    console: Console,
    *,
    name: str,
    version: str,
    url: str,
    database: str,
    concurrency: int,
    keyed: bool,
    key_env: str,
    exposed: bool,
) -> None:
    console.print(f"Serving workflow [bold]{escape(name)}[/bold] {escape(version)} on {url}")
    console.print(f"  API docs:     {url}/docs")
    console.print(f"  run records:  {escape(database)}")
    console.print(f"  concurrency:  {concurrency} run(s) at once")
    if keyed:
        console.print(f"  API key:      required (from {key_env})")
    else:
        console.print(f"  API key:      none (set {key_env} to require one)")
        if exposed:
            console.print(
                "[yellow]warning:[/yellow] listening beyond this machine without an API key"
            )


def _run_server(app: FastAPI, config: Any) -> None:
    import uvicorn

    from ..serve import request_shutdown

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, telling the app at the first signal: queued runs fail and the grace
        period starts then, not after uvicorn has waited for the open requests."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            request_shutdown(app)
            super().handle_exit(sig, frame)

    GracefulServer(config).run()


__all__ = ["serve_command"]

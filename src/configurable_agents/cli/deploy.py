"""``configurable-agents deploy WORKFLOW.yaml [-o DIR] [--force]``: write a folder that brings
the workflow's whole stack up with ``docker compose up`` (see ``configurable_agents.deploy``).
Registered on the main app with ``app.command("deploy")(deploy_command)``.

Exit codes: 0 written; 2 the workflow is invalid, or DIR is not empty and ``--force`` is not
given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .common import WorkflowArg, guard


def deploy_command(
    workflow: WorkflowArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The folder to write the bundle into."),
    ] = Path("deploy"),
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into the folder even if it is not empty."),
    ] = False,
) -> None:
    """Write a Dockerfile and docker-compose.yml that run the workflow server with MLflow,
    Prometheus (alert rules), Alertmanager, Grafana (dashboards) and Phoenix (traces)."""
    from ..deploy import write_bundle

    with guard(False, False):
        bundle = write_bundle(workflow, output, force=force)
        console = Console(highlight=False, soft_wrap=True, emoji=False)
        where = escape(str(bundle.directory))
        console.print(
            f"[green]✓[/green] wrote the deployment bundle of {escape(str(workflow))} to "
            f"{where}/ (image extras: {', '.join(bundle.extras)})"
        )
        for note in bundle.notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}")
        console.print(f"  start it:  cd {where} && docker compose up -d --build")
        console.print(f"  read:      {where}/README.md (addresses, API keys, alert routing)")

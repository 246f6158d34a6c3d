"""``prompts push WORKFLOW`` and ``prompts list [WORKFLOW | --tracking-uri U]``: node prompts in
the MLflow Prompt Registry (see ``configurable_agents.prompts``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .common import WarningHandler, WorkflowArg, guard

prompts_app = typer.Typer(
    help="Node prompts in the MLflow Prompt Registry: push a workflow's, list what is there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="The registry's store (default: the workflow's observability.mlflow.tracking_uri).",
    ),
]


def show_prompt_warnings(console: Console) -> None:
    """Print the prompt loader's warnings (a ``prompt_ref`` running on its fallback)."""
    logger = logging.getLogger("configurable_agents.prompts")
    if not any(isinstance(h, WarningHandler) for h in logger.handlers):
        logger.addHandler(WarningHandler(console))
        logger.propagate = False


def _out() -> Console:
    return Console(highlight=False, emoji=False, soft_wrap=True)


@prompts_app.command("push")
def push_command(
    workflow: WorkflowArg,
    tracking_uri: TrackingUri = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Register each inline node prompt as a new version (unchanged ones are skipped) and
    print the prompt_ref lines to use. Names: <flow.name>.<node id>, or the node's own
    prompt_ref name when it has one."""
    from ..config import load_workflow
    from ..prompts.push import push

    with guard(False, as_json):
        loaded = load_workflow(workflow)
        uri, pushed = push(loaded, tracking_uri)
        from ..urls import mask_url

        if as_json:
            print(
                json.dumps(
                    {
                        "tracking_uri": mask_url(uri),
                        "prompts": [
                            {
                                "node": p.node,
                                "name": p.name,
                                "version": p.version,
                                "registered": p.registered,
                                "prompt_ref": {"name": p.name, "version": p.version},
                            }
                            for p in pushed
                        ],
                    }
                )
            )
            return
        out = _out()
        if not pushed:
            out.print(f"{escape(str(workflow))}: no node has an inline prompt to push")
            return
        new = sum(p.registered for p in pushed)
        out.print(
            f"{escape(mask_url(uri))}: {new} new version(s), {len(pushed) - new} unchanged; "
            "use in the nodes:"
        )
        for p in pushed:
            state = "registered" if p.registered else "unchanged"
            out.print(f"  - id: {escape(p.node)}    # {escape(p.name)} v{p.version}, {state}")
            out.print(f"    {escape(p.ref_line)}")
            if p.warning:
                out.print(f"    [yellow]warning:[/yellow] {escape(p.warning)}")


@prompts_app.command("list")
def list_command(
    workflow: Annotated[
        Path | None,
        typer.Argument(help="Only the prompts this workflow uses or pushes.", show_default=False),
    ] = None,
    tracking_uri: TrackingUri = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the registered prompts: name, versions and aliases."""
    from ..exceptions import InputError, Issue
    from ..prompts.push import list_prompts, workflow_prompt_names

    with guard(False, as_json):
        names = None
        uri = tracking_uri
        if workflow is not None:
            from ..config import load_workflow

            loaded = load_workflow(workflow)
            names = workflow_prompt_names(loaded)
            uri = uri or loaded.spec.config.observability.mlflow.tracking_uri
        if uri is None:
            raise InputError(
                Issue("say which registry", hint="give a WORKFLOW file or --tracking-uri URI")
            )
        listed = list_prompts(uri, names)
        if as_json:
            print(
                json.dumps(
                    {
                        "prompts": [
                            {
                                "name": p.name,
                                "versions": [v for v, _ in p.versions],
                                "aliases": {a: v for v, aliases in p.versions for a in aliases},
                                "tags": p.tags,
                            }
                            for p in listed
                        ]
                    }
                )
            )
            return
        out = _out()
        if not listed:
            out.print("no prompts registered" + (" for this workflow" if names else ""))
            return
        for p in listed:
            versions = ", ".join(str(v) for v, _ in p.versions)
            aliases = ", ".join(f"{a}→{v}" for v, found in p.versions for a in found)
            out.print(
                f"{escape(p.name)}  versions: {versions}"
                + (f"  aliases: {escape(aliases)}" if aliases else "")
            )

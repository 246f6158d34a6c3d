"""``retention apply WORKFLOW [--dry-run]``: delete what is older than ``retention_days`` now;
and the once-a-day background pass of ``run`` (``maybe_apply_in_background``)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .common import WorkflowArg, guard

retention_app = typer.Typer(
    help="Delete traces and run records older than observability.mlflow.retention_days.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DAY_SECONDS = 86_400.0


@retention_app.command("apply")
def apply(
    workflow: WorkflowArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="The server's run records (default: configurable_agents_runs.db here).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Delete the workflow's traces (with artifacts, assessments, spool entries) and server run
    records older than its retention_days, and print what was deleted."""
    from ..config import load_workflow
    from ..serve.retention import apply_retention

    with guard(False, as_json):
        loaded = load_workflow(workflow)
        result = apply_retention(loaded, dry_run=dry_run, database_url=database_url)
        _stamp(loaded.file).touch()
        if as_json:
            print(json.dumps(result.to_dict()))
            return
        verb = "would delete" if dry_run else "deleted"
        cutoff = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result.cutoff_ms / 1000))
        out = Console(highlight=False, emoji=False)
        out.print(
            f"retention of '{escape(result.workflow)}': {result.days} day(s), before {cutoff}"
        )
        for experiment, count in sorted(result.traces.items()) or [("(no experiment)", 0)]:
            out.print(f"  {verb} {count} trace(s) in experiment '{escape(experiment)}'")
        if not dry_run:
            out.print(f"  {verb} {result.artifacts} artifact folder(s)")
        out.print(f"  {verb} {result.spool_records} spool record(s)")
        out.print(f"  {verb} {result.run_records} server run record(s)")


def _stamp(workflow_file: str) -> Path:
    from ..observe.trace.spool import state_dir

    key = hashlib.sha256(str(Path(workflow_file).resolve()).encode()).hexdigest()[:16]
    folder = state_dir() / "retention"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.stamp"


def maybe_apply_in_background(loaded: object) -> bool:
    """``run``: apply retention at most once a day per workflow file, in a detached process
    (the run does not wait for it). True when one was started."""
    spec = getattr(loaded, "spec", None)
    file = getattr(loaded, "file", None)
    if spec is None or file is None or spec.config.observability.mlflow.retention_days is None:
        return False
    try:
        stamp = _stamp(file)
        if stamp.exists() and time.time() - stamp.stat().st_mtime < DAY_SECONDS:
            return False
        stamp.touch()  # claimed: no other run starts one today
        # posix_spawn, as the trace drainer is started: a detached process in its own
        # session, with no object to wait on
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "configurable_agents", "retention", "apply", str(file)],
            os.environ.copy(),
            file_actions=[(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)],
            setsid=True,
        )
    except OSError:
        return False
    return True

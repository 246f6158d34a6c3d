"""How runs look on a terminal: per-node progress, outputs, totals."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.status import Status
from rich.syntax import Syntax

from ..pricing import PRICE_HINT

if TYPE_CHECKING:
    from ..observe import CostSummary
    from ..run.result import NodeRun, RunResult


def _duration(ms: float) -> str:
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


class Progress:
    """Prints one line per finished node (with elapsed time) and a spinner for the running one."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.started = time.perf_counter()
        self._status: Status | None = None

    def event(self, kind: str, record: NodeRun) -> None:
        if kind == "node_start":
            label = f"running [bold]{escape(record.node)}[/bold]"
            if record.visit:
                label += f" (visit {record.visit + 1})"
            if self.console.is_terminal:
                if self._status is None:
                    self._status = self.console.status(label)
                    self._status.start()
                else:
                    self._status.update(label)
            return
        elapsed = time.perf_counter() - self.started
        mark = "[green]✓[/green]" if record.status == "succeeded" else "[red]✗[/red]"
        visit = f" #{record.visit + 1}" if record.visit else ""
        details = [_duration(record.duration_ms)]
        if record.usage.total_tokens:
            details.append(f"{record.usage.input_tokens}→{record.usage.output_tokens} tokens")
        if record.retries:
            details.append(f"{record.retries} retr{'y' if record.retries == 1 else 'ies'}")
        if record.tool_calls:
            details.append(f"{len(record.tool_calls)} tool call(s)")
        self.console.print(
            f"{mark} [bold]{escape(record.node)}{visit}[/bold]  "
            f"[dim]{escape(' · '.join(details))}  (at {elapsed:.1f} s)[/dim]"
        )
        if self.verbose:
            self._details(record)

    def _details(self, record: NodeRun) -> None:
        self.console.print(Panel(escape(record.prompt), title="prompt", title_align="left"))
        for call in record.tool_calls:
            self.console.print(
                f"  [dim]tool[/dim] {escape(call.name)}({escape(json.dumps(call.args))}) → "
                f"{escape(call.result[:500])}"
            )
        for i, response in enumerate(record.responses):
            self.console.print(
                Panel(escape(response), title=f"response {i + 1}", title_align="left")
            )
        for error in record.validation_errors:
            self.console.print(f"  [yellow]invalid output:[/yellow] {escape(error)}")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _show(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value) if value else "[dim](empty)[/dim]"
    return Syntax(json.dumps(value, indent=2, ensure_ascii=False), "json", word_wrap=True)


def print_result(result: RunResult, cost: CostSummary, out: Console, err: Console) -> None:
    """Outputs on stdout; cost, tokens, status and errors on stderr."""
    if result.succeeded:
        for name, value in result.outputs.items():
            # soft_wrap off here: on a soft-wrapping console a panel crops text to its first line
            out.print(
                Panel(_show(value), title=f"[bold]{escape(name)}[/bold]", title_align="left"),
                soft_wrap=False,
            )
    u = result.usage
    notes = sorted({m.note for m in cost.by_model.values() if m.note and not cost.unpriced})
    suffix = f" ({', '.join(notes)})" if notes else ""
    err.print(f"Workflow cost: ${cost.total_usd:.6f}, {u.total_tokens} tokens{suffix}")
    err.print(
        f"  [dim]{u.input_tokens} in, {u.output_tokens} out · {len(result.nodes)} node run(s) · "
        f"{_duration(result.duration_ms)}[/dim]"
    )
    for verdict in result.judges or []:
        mark = "[green]pass[/green]" if verdict.passed else "[red]fail[/red]"
        shown = "error" if verdict.score is None else f"{verdict.score:g}"
        err.print(
            f"  judge {escape(verdict.name)} on {escape(verdict.node or 'outputs')}: {mark} "
            f"({shown}, needs {verdict.threshold:g}) [dim]{escape(verdict.rationale[:120])}[/dim]"
        )
    for model in cost.unpriced:
        err.print(
            f"[yellow]warning:[/yellow] no price is known for model '{escape(model)}'; it is "
            f"counted as $0. To price it, {escape(PRICE_HINT)}"
        )
    if result.trace_id:
        from ..observe.trace.targets import mask_url

        uri = mask_url(result.trace_uri or "")
        when = "" if result.trace_written else " [dim](written in the background)[/dim]"
        err.print(f"Trace: {result.trace_id} in {escape(uri)}{when}")
        if uri.startswith(("http://", "https://")):
            err.print(f"  [dim]open {escape(uri)} → Experiments → Traces[/dim]")
        else:
            err.print(f"  [dim]view it: mlflow ui --backend-store-uri {escape(uri)}[/dim]")
    if result.error is not None:
        node = f" in node '{escape(result.error.node)}'" if result.error.node else ""
        err.print(
            f"[red]run failed{node}:[/red] {escape(result.error.type)}: "
            f"{escape(result.error.message)}"
        )

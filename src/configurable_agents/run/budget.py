"""``config.budget``: spend limits checked before every model call.

Before a call, its worst case is bounded: the rendered input (messages, tool and output
schemas) counted as one token per UTF-8 byte (a token is at least one byte) plus a few tokens per
message, and ``max_tokens`` of output, priced with the node's model and the same price table
as the cost report. With ``action: block`` a call whose worst case would take a window past its
limit is not made: the run fails with ``BudgetExceededError``. The worst case is *reserved*
while the call runs and settled to its real cost after, so concurrent runs never pass a limit
together.

Windows: ``per_run_usd`` (this run, in memory), ``daily_usd`` (the UTC day) and
``monthly_usd`` (the UTC month). Day and month spend lives in a small SQLite *spend ledger*
(``budget.db`` next to the workflow's spool, or ``$CONFIGURABLE_AGENTS_BUDGET_LEDGER``), shared
by every process on the machine that uses it: CLI runs, the server's workers, batch jobs.
Reservations are taken in ``BEGIN IMMEDIATE`` transactions, so two processes racing the last
dollars of a budget are serialized. The first time a window is used, the ledger is *seeded*
with what the tracking store already holds for it and the ledger does not (runs made before
the ledger existed, or by other machines), through the observer's ``budget_spend``.
A reservation of a process that died is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import BudgetExceededError, BudgetUnavailableError
from ..pricing import price_split
from ..usage import TokenUsage
from .ledger import (
    Ledger,
    Window,
    default_ledger_path,
    ledger_at,
    to_pico,
    usd,
    windows_at,
)

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from ..compile.plan import CompiledNode, CompiledWorkflow
    from ..config.schema import BudgetConfig

log = logging.getLogger("configurable_agents.budget")
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
# (all workflows?, start_ms, end_ms) -> USD the store holds for that window, or None (no store)
SpendSource = Callable[[bool, int, int], float | None]


def input_bound(node: CompiledNode, messages: Sequence[BaseMessage], kind: str) -> int:
    """An upper bound of a call's input tokens: one per UTF-8 byte of what is sent."""
    total = 0
    for message in messages:
        content = message.content
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        total += len(text.encode()) + MESSAGE_OVERHEAD_TOKENS
        calls = getattr(message, "tool_calls", None)
        if calls:
            total += len(json.dumps(calls, default=str).encode())
    if kind == "structured":
        total += len(json.dumps(node.json_schema).encode())
    for tool in node.tools:
        total += len(tool.name) + len(tool.description or "") + MESSAGE_OVERHEAD_TOKENS
        with contextlib.suppress(Exception):
            total += len(json.dumps(tool.args).encode())
    return total


@dataclass
class Reservation:
    id: int | None
    worst_pico: int
    before: dict[str, int]
    node: str


@dataclass
class BudgetGuard:
    """The budget of one run: asked before each model call, told after it."""

    compiled: CompiledWorkflow
    run_id: str
    ledger_path: Path | None
    source: SpendSource | None
    run_pico: int = 0
    state: str = "ok"  # ok | alert | exceeded (warn: passed a limit) | refused | unavailable
    refused: str | None = None
    peak: dict[str, int] = field(default_factory=dict)  # spent by budget, after the last call
    _warned: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def budget(self) -> BudgetConfig:
        return self.compiled.workflow.spec.config.budget

    @property
    def block(self) -> bool:
        return self.budget.action == "block"

    def _scope(self) -> tuple[str, str | None]:
        if self.budget.scope == "all":
            return "all", None
        return "workflow:" + self.compiled.name, self.compiled.name

    def worst_case(self, node: CompiledNode, messages: Sequence[BaseMessage], kind: str) -> int:
        usage = TokenUsage(input_bound(node, messages, kind), node.llm.max_tokens or 0)
        split = price_split(
            node.model_name, node.provider.name, usage, self.compiled.price_overrides()
        )
        if split is None:
            raise BudgetUnavailableError(
                f"node '{node.id}': model '{node.model_name}' has no known price, so the "
                "budget cannot bound its call; add it under config.pricing.models",
                node=node.id,
            )
        return to_pico(split[0] + split[1])

    def reserve(
        self, node: CompiledNode, messages: Sequence[BaseMessage], kind: str
    ) -> Reservation:
        worst = self.worst_case(node, messages, kind)
        limits = self.budget.limits
        with self._lock:
            run_before = self.run_pico
        if "per_run_usd" in limits:
            limit = to_pico(limits["per_run_usd"])
            if run_before + worst > limit and self.block:
                self._refuse(
                    node.id, "per_run_usd", f"run {self.run_id[:12]}", run_before, worst, limit
                )
        windows = windows_at(self.budget)
        if not windows or self.ledger_path is None:
            return Reservation(None, worst, {"per_run_usd": run_before}, node.id)
        scope, workflow = self._scope()
        try:
            ledger = ledger_at(self.ledger_path)
            self._seed(ledger, scope, workflow, windows)
            rid, before, refused = ledger.reserve(
                scope=scope,
                workflow=self.compiled.name,
                count_workflow=workflow,
                run_id=self.run_id,
                node=node.id,
                windows=windows,
                worst_pico=worst,
                block=self.block,
            )
        except Exception as exc:  # noqa: BLE001 - the ledger or the store: say why
            return self._unavailable(node.id, exc, worst, run_before)
        if refused is not None:
            self._refuse(
                node.id,
                refused.budget,
                refused.label,
                before[refused.budget],
                worst,
                refused.limit_pico,
            )
        before["per_run_usd"] = run_before
        return Reservation(rid, worst, before, node.id)

    def settle(
        self, reservation: Reservation, model: str, provider: str, usage: TokenUsage
    ) -> None:
        split = price_split(model, provider, usage, self.compiled.price_overrides())
        actual = to_pico(split[0] + split[1]) if split is not None else reservation.worst_pico
        with self._lock:
            self.run_pico += actual
            run_now = self.run_pico
        if reservation.id is not None and self.ledger_path is not None:
            try:
                ledger_at(self.ledger_path).settle(reservation.id, actual)
            except (sqlite3.Error, OSError) as exc:
                log.warning("could not settle a call's cost in the spend ledger: %s", exc)
        limits = self.budget.limits
        if "per_run_usd" in limits:
            self._note("per_run_usd", run_now, to_pico(limits["per_run_usd"]))
        for window in windows_at(self.budget):
            spent = reservation.before.get(window.budget, 0) + actual
            self._note(window.budget, spent, window.limit_pico)

    def _seed(
        self, ledger: Ledger, scope: str, workflow: str | None, windows: list[Window]
    ) -> None:
        missing = ledger.needs_seed(scope, windows)
        for window in missing:
            found = (
                self.source(scope == "all", window.start_ms, window.end_ms) if self.source else None
            )
            ledger.add_seed(scope, window, workflow, to_pico(found or 0.0))

    def _note(self, budget: str, spent: int, limit: int) -> None:
        """Remember the window's spend; warn once per run at the alert threshold and once
        when the limit is passed."""
        with self._lock:
            self.peak[budget] = max(self.peak.get(budget, 0), spent)
        threshold = to_pico(usd(limit) * self.budget.alert_threshold)
        if spent > limit and budget + ":limit" not in self._warned:
            self._warned.update({budget + ":limit", budget + ":alert"})
            self.state = "exceeded"
            log.warning(
                "budget %s of workflow '%s' passed: $%.6f spent of $%.6f (action: %s)",
                budget,
                self.compiled.name,
                usd(spent),
                usd(limit),
                self.budget.action,
            )
        elif spent >= threshold and budget + ":alert" not in self._warned:
            self._warned.add(budget + ":alert")
            if self.state == "ok":
                self.state = "alert"
            log.warning(
                "budget %s of workflow '%s' at %.0f%%: $%.6f spent of $%.6f",
                budget,
                self.compiled.name,
                100 * spent / limit,
                usd(spent),
                usd(limit),
            )

    def _refuse(
        self, node: str, budget: str, window: str, spent: int, worst: int, limit: int
    ) -> None:
        self.state, self.refused = "refused", budget
        raise BudgetExceededError(
            f"node '{node}': budget {budget} refused a model call: {window} has spent "
            f"${usd(spent):.6f} of ${usd(limit):.6f}, and this call could cost up to "
            f"${usd(worst):.6f} (raise config.budget.{budget}, lower max_tokens, or wait for "
            "the next window)",
            node=node,
            budget=budget,
            window=window,
            spent=usd(spent),
            worst_case=usd(worst),
            limit=usd(limit),
        )

    def _unavailable(
        self, node: str, exc: BaseException, worst: int, run_before: int
    ) -> Reservation:
        reason = f"{type(exc).__name__}: {exc}"
        if self.block:
            self.state = "unavailable"
            raise BudgetUnavailableError(
                f"node '{node}': the budget's spend cannot be read ({reason}); with action: "
                "block no model call is made without it. Check the spend ledger "
                f"({self.ledger_path}) and the tracking store, or use action: warn",
                node=node,
            ) from exc
        if "unavailable" not in self._warned:
            self._warned.add("unavailable")
            log.warning(
                "budget of workflow '%s': the spend cannot be read (%s); the daily/monthly "
                "limits are not checked for this run",
                self.compiled.name,
                reason,
            )
        return Reservation(None, worst, {"per_run_usd": run_before}, node)

    def summary(self) -> dict[str, Any]:
        """The budget's state, as the trace records it."""
        limits = self.budget.limits
        return {
            "action": self.budget.action,
            "state": self.state,
            "refused": self.refused,
            "run_usd": usd(self.run_pico),
            "limits": limits,
            "spent": {k: usd(v) for k, v in self.peak.items()},
        }


def guard_for(compiled: CompiledWorkflow, run_id: str, observer: Any) -> BudgetGuard | None:
    """The run's ``BudgetGuard``, or None when the workflow sets no limit."""
    budget = compiled.workflow.spec.config.budget
    if not budget.limits:
        return None
    path: Path | None = None
    source: SpendSource | None = None
    locate = getattr(observer, "budget_ledger_path", None)
    if budget.daily_usd is not None or budget.monthly_usd is not None:
        path = locate(compiled) if locate is not None else default_ledger_path()
        spend = getattr(observer, "budget_spend", None)
        if spend is not None:

            def source(all_: bool, start: int, end: int) -> float | None:
                return spend(compiled, all_, start, end)  # type: ignore[no-any-return]

    return BudgetGuard(compiled, run_id, path, source)

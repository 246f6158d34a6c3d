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
import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import BudgetExceededError, BudgetUnavailableError
from ..pricing import price_split
from ..usage import TokenUsage

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from ..compile.plan import CompiledNode, CompiledWorkflow
    from ..config.schema import BudgetConfig

log = logging.getLogger("configurable_agents.budget")
LEDGER_ENV = "CONFIGURABLE_AGENTS_BUDGET_LEDGER"
PICO = 10**12
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
WINDOWS = {"per_run_usd": "run", "daily_usd": "day", "monthly_usd": "month"}
# (scope, start_ms, end_ms) -> USD the store holds for it, or None (no store)
SpendSource = Callable[[bool, int, int], float | None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    run_id TEXT NOT NULL,
    node TEXT,
    day TEXT NOT NULL,
    month TEXT NOT NULL,
    pico INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_day ON spend (day, workflow);
CREATE INDEX IF NOT EXISTS spend_month ON spend (month, workflow);
CREATE TABLE IF NOT EXISTS seeds (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    pico INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scope, window)
);
"""


def default_ledger_path() -> Path:
    """``$CONFIGURABLE_AGENTS_BUDGET_LEDGER``, else ``budget.db`` in the state directory."""
    chosen = os.environ.get(LEDGER_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    base = os.environ.get("CONFIGURABLE_AGENTS_STATE_DIR")
    if base:
        return Path(base) / "budget.db"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "configurable-agents" / "budget.db"


def usd(pico: int) -> float:
    return pico / PICO


def to_pico(value: Decimal | float) -> int:
    return int(Decimal(str(value)) * PICO + Decimal("0.5"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class Window:
    budget: str  # daily_usd | monthly_usd
    key: str  # "2026-12-01" or "2026-12"
    start_ms: int
    end_ms: int
    limit_pico: int

    @property
    def label(self) -> str:
        return f"{'day' if self.budget == 'daily_usd' else 'month'} {self.key} (UTC)"


def windows_at(budget: BudgetConfig, now: float | None = None) -> list[Window]:
    """The day/month windows of ``budget`` that contain ``now`` (UTC)."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    found = []
    if budget.daily_usd is not None:
        end = day + dt.timedelta(days=1)
        found.append(
            Window(
                "daily_usd",
                day.strftime("%Y-%m-%d"),
                int(day.timestamp() * 1000),
                int(end.timestamp() * 1000),
                to_pico(budget.daily_usd),
            )
        )
    if budget.monthly_usd is not None:
        found.append(
            Window(
                "monthly_usd",
                month.strftime("%Y-%m"),
                int(month.timestamp() * 1000),
                int(next_month.timestamp() * 1000),
                to_pico(budget.monthly_usd),
            )
        )
    return found


class Ledger:
    """The shared spend ledger (one SQLite file, WAL, serialized reservations)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), timeout=60, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=60000")
            self._conn.executescript(_SCHEMA)
        self._host = socket.gethostname()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _sum(self, window: Window, workflow: str | None) -> int:
        column = "day" if window.budget == "daily_usd" else "month"
        query = f"SELECT COALESCE(SUM(pico), 0) FROM spend WHERE {column} = ?"
        params: list[Any] = [window.key]
        if workflow is not None:
            query += " AND workflow = ?"
            params.append(workflow)
        return int(self._conn.execute(query, params).fetchone()[0])

    def _seed(self, scope: str, window: Window) -> int | None:
        row = self._conn.execute(
            "SELECT pico FROM seeds WHERE scope = ? AND window = ?", (scope, window.key)
        ).fetchone()
        return None if row is None else int(row[0])

    def needs_seed(self, scope: str, windows: Sequence[Window]) -> list[Window]:
        with self._lock:
            return [w for w in windows if self._seed(scope, w) is None]

    def add_seed(self, scope: str, window: Window, workflow: str | None, store_pico: int) -> None:
        """Record what the store held for ``window`` beyond what the ledger has settled."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._seed(scope, window) is None:
                    column = "day" if window.budget == "daily_usd" else "month"
                    query = (
                        f"SELECT COALESCE(SUM(pico), 0) FROM spend WHERE {column} = ? "
                        "AND reserved = 0"
                    )
                    params: list[Any] = [window.key]
                    if workflow is not None:
                        query += " AND workflow = ?"
                        params.append(workflow)
                    settled = int(self._conn.execute(query, params).fetchone()[0])
                    self._conn.execute(
                        "INSERT INTO seeds VALUES (?, ?, ?, ?)",
                        (scope, window.key, max(store_pico - settled, 0), time.time()),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def spent(self, scope: str, window: Window, workflow: str | None) -> int:
        with self._lock:
            return (self._seed(scope, window) or 0) + self._sum(window, workflow)

    def reserve(
        self,
        *,
        scope: str,
        workflow: str,
        count_workflow: str | None,
        run_id: str,
        node: str,
        windows: Sequence[Window],
        worst_pico: int,
        block: bool,
        now: float | None = None,
    ) -> tuple[int | None, dict[str, int], Window | None]:
        """Reserve ``worst_pico`` in every window, unless (``block``) one would pass its limit.
        Returns (reservation id or None when refused, spent before by budget, the window that
        refused)."""
        moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        day, month = moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._drop_dead()
                before: dict[str, int] = {}
                for window in windows:
                    spent = (self._seed(scope, window) or 0) + self._sum(window, count_workflow)
                    before[window.budget] = spent
                    if block and spent + worst_pico > window.limit_pico:
                        self._conn.execute("ROLLBACK")
                        return None, before, window
                cursor = self._conn.execute(
                    "INSERT INTO spend (workflow, run_id, node, day, month, pico, reserved, host,"
                    " pid, created) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                    (
                        workflow,
                        run_id,
                        node,
                        day,
                        month,
                        worst_pico,
                        self._host,
                        os.getpid(),
                        time.time(),
                    ),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        return cursor.lastrowid, before, None

    def settle(self, reservation: int, pico: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE spend SET pico = ?, reserved = 0 WHERE id = ?", (pico, reservation)
            )

    def _drop_dead(self) -> None:
        pids = [
            r[0]
            for r in self._conn.execute(
                "SELECT DISTINCT pid FROM spend WHERE reserved = 1 AND host = ?", (self._host,)
            )
        ]
        for pid in pids:
            if pid != os.getpid() and not _pid_alive(pid):
                self._conn.execute(
                    "DELETE FROM spend WHERE reserved = 1 AND host = ? AND pid = ?",
                    (self._host, pid),
                )


_ledgers: dict[Path, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger_at(path: Path) -> Ledger:
    with _ledgers_lock:
        found = _ledgers.get(path)
        if found is None:
            found = _ledgers[path] = Ledger(path)
        return found


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
            if run_before + worst > limit:
                if self.block:
                    self._refuse(
                        node.id, "per_run_usd", f"run {self.run_id[:12]}", run_before, worst, limit
                    )
                self._note("per_run_usd", run_before + worst, limit, projected=True)
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
        except (sqlite3.Error, OSError, BudgetUnavailableError, Exception) as exc:
            if isinstance(exc, BudgetExceededError):
                raise
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
        for window in windows:
            self._note(
                window.budget, before[window.budget] + worst, window.limit_pico, projected=True
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

    def _note(self, budget: str, spent: int, limit: int, *, projected: bool = False) -> None:
        """Remember the window's spend; warn once per run at the alert threshold and once
        when the limit is passed (``projected``: a worst case, not yet spent: no warning)."""
        with self._lock:
            self.peak[budget] = max(self.peak.get(budget, 0), spent)
        if projected:
            return
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

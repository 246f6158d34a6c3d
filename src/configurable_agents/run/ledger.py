"""The spend ledger of ``config.budget``: one SQLite file (WAL) shared by every process that
uses it, with the day and month windows (UTC). Reservations are taken in ``BEGIN IMMEDIATE``
transactions, so two processes racing the last dollars of a budget are serialized; each window
is seeded once with what the tracking store holds for it beyond the ledger's own settled
spend; a reservation of a process that died (same host) is dropped."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..wal import enable_wal

if TYPE_CHECKING:
    from ..config.schema import BudgetConfig

LEDGER_ENV = "CONFIGURABLE_AGENTS_BUDGET_LEDGER"
PICO = 10**12

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
            enable_wal(self._conn)
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

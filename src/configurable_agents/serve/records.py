"""Run records in SQL (SQLAlchemy Core): SQLite by default, PostgreSQL (or any SQLAlchemy
database) by URL.

One table, ``runs``, one row per run: status (``queued`` → ``running`` → ``succeeded`` /
``failed``), inputs, tags, outputs, error, trace id, cost, token usage, per-node timings and
timestamps (naive UTC). Rows are scoped by workflow name, so servers of different workflows can
share one database.

Writes go through one background thread that commits whatever has queued up in one
transaction (the last snapshot of each run wins), so a busy server makes few, cheap commits and
SQLite never sees two writers. A caller that must know its row is stored passes ``on_commit``.
In-flight states may be deferred: written only if the run is still in flight a second later,
so that a short run costs one row write, not three.
On ``open()``, rows a previous process left ``queued`` or ``running`` are marked failed: that
process stopped before they finished.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ..exceptions import Issue, MissingExtraError, UserError

log = logging.getLogger("configurable_agents.serve")

DEFAULT_DATABASE_FILE = "configurable_agents_runs.db"
STOPPED_REASON = "server stopped before the run finished"
STOPPED_ERROR_TYPE = "ServerStopped"
STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")
_WRITE_RETRIES = 3
_BATCH = 500

metadata = MetaData()
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("workflow_version", String(64), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("outputs", JSON),
    Column("error", JSON),
    Column("run_id", String(32)),
    Column("trace_id", String(64)),
    Column("cost_usd", Float),
    Column("usage", JSON),
    Column("duration_ms", Float),
    Column("nodes", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Index("ix_runs_workflow_created", "workflow", "created_at"),
    Index("ix_runs_status", "status"),
)
COLUMNS = tuple(c.name for c in runs.columns)

Record = dict[str, Any]
OnCommit = Callable[[BaseException | None], None]
_Item = tuple[Record, OnCommit | None, bool]  # snapshot, callback, deferred


def utcnow() -> datetime:
    """Naive UTC (what the ``DateTime`` columns hold on every database)."""
    return datetime.now(UTC).replace(tzinfo=None)


def default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


def describe_url(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def stopped_error(message: str = STOPPED_REASON) -> dict[str, Any]:
    return {"type": STOPPED_ERROR_TYPE, "message": message, "node": None}


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=NORMAL`` and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(
            Issue(
                f"--database-url {url!r} is not a database URL: {exc}",
                hint="e.g. sqlite:///runs.db or postgresql+psycopg2://user:pw@host/db",
            )
        ) from None
    sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool  # one shared in-memory database
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as exc:
        if parsed.get_backend_name() == "postgresql":
            raise MissingExtraError("psycopg2-binary", "postgres", "A PostgreSQL run store") from (
                exc
            )
        raise UserError(
            Issue(f"no database driver for {describe_url(url)}: {exc}", hint="install the driver")
        ) from None
    except (ArgumentError, ValueError) as exc:
        raise UserError(Issue(f"bad database URL {describe_url(url)}: {exc}")) from None
    if sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            if parsed.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def _row_to_record(row: Any) -> Record:
    return {name: row[name] for name in COLUMNS}


class RunStore:
    """The ``runs`` table of one workflow: background writes, direct reads."""

    defer_seconds = 1.0  # how long a deferred snapshot waits for a newer one

    def __init__(self, url: str | None, workflow: str) -> None:
        self.url = url or default_database_url()
        self.workflow = workflow
        self.engine = create_store_engine(self.url)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._upsert = self._make_upsert()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> int:
        """Create the table if needed, mark runs a previous process left unfinished as
        failed (return how many), and start the writer."""
        try:
            self._check_table()
            metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                unfinished = runs.c.status.in_(("queued", "running"))
                marked = conn.execute(
                    update(runs)
                    .where(runs.c.workflow == self.workflow, unfinished)
                    .values(status="failed", error=stopped_error(), finished_at=utcnow())
                ).rowcount
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise UserError(
                Issue(
                    f"cannot use the run database {describe_url(self.url)}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                    hint="check --database-url and that the database server is up",
                )
            ) from None
        if marked:
            log.warning("marked %d run(s) left unfinished by a previous server as failed", marked)
        self._thread = threading.Thread(
            target=self._write_loop, name="configurable-agents-records", daemon=True
        )
        self._thread.start()
        return int(marked or 0)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (waiting up to ``timeout`` s), stop the writer, dispose the
        engine. ``False`` when the writer did not finish in time."""
        done = True
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            done = not self._thread.is_alive()
            self._thread = None
        self.engine.dispose()
        return done

    def _check_table(self) -> None:
        existing = inspect(self.engine)
        if not existing.has_table("runs"):
            return
        have = {c["name"] for c in existing.get_columns("runs")}
        missing = [name for name in COLUMNS if name not in have]
        if missing:
            raise UserError(
                Issue(
                    f"the database {describe_url(self.url)} already has a 'runs' table that is "
                    f"not a configurable-agents run table (no column(s) {', '.join(missing)})",
                    hint="give the server its own database with --database-url "
                    "(an MLflow tracking database has a 'runs' table of its own)",
                )
            )

    # -- writes ----------------------------------------------------------------------------

    def save(
        self, record: Record, on_commit: OnCommit | None = None, *, defer: bool = False
    ) -> None:
        """Queue a snapshot of ``record`` (every column) for writing; ``on_commit(error)`` is
        called from the writer thread once it is committed (``error`` None) or given up.

        ``defer``: write it only if no newer snapshot of the run comes within
        ``defer_seconds`` (for in-flight states: a short run is then written once, finished).
        """
        if self._closed:
            if on_commit is not None:
                on_commit(RuntimeError("the run store is closed"))
            return
        row = {name: record.get(name) for name in COLUMNS}
        self._queue.put((row, on_commit, defer and on_commit is None))

    def _make_upsert(self) -> Callable[[Any, list[Record]], None]:
        backend = self.engine.dialect.name
        if backend in ("sqlite", "postgresql"):
            from sqlalchemy.dialects import postgresql, sqlite

            dialect: Any = sqlite if backend == "sqlite" else postgresql
            stmt = dialect.insert(runs)
            stmt = stmt.on_conflict_do_update(
                index_elements=[runs.c.id],
                set_={n: stmt.excluded[n] for n in COLUMNS if n not in ("id", "created_at")},
            )

            def upsert(conn: Any, rows: list[Record]) -> None:
                conn.execute(stmt, rows)

            return upsert

        def update_or_insert(conn: Any, rows: list[Record]) -> None:
            for row in rows:
                changed = conn.execute(
                    update(runs).where(runs.c.id == row["id"]).values(**row)
                ).rowcount
                if not changed:
                    conn.execute(runs.insert().values(**row))

        return update_or_insert

    def _write_loop(self) -> None:
        deferred: dict[str, tuple[float, Record]] = {}  # run id -> (when due, snapshot)
        due: list[tuple[float, str]] = []  # a heap of (when due, run id); stale entries too
        stop = False
        while not stop:
            wait = None if not due else max(0.0, due[0][0] - time.monotonic())
            try:
                first: _Item | None = self._queue.get(timeout=wait)
                items = [first]
            except queue.Empty:
                items = []
            while items and items[-1] is not None and len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch: list[tuple[Record, OnCommit | None]] = []
            for item in items:
                if item is None:
                    stop = True
                    break
                row, on_commit, defer = item
                if defer:
                    when = deferred[row["id"]][0] if row["id"] in deferred else 0.0
                    if not when:
                        when = time.monotonic() + self.defer_seconds
                        heapq.heappush(due, (when, row["id"]))
                    deferred[row["id"]] = (when, row)
                else:
                    deferred.pop(row["id"], None)
                    batch.append((row, on_commit))
            now = time.monotonic()
            while due and (stop or due[0][0] <= now):
                when, run_id = heapq.heappop(due)
                entry = deferred.get(run_id)
                if entry is not None and entry[0] == when:
                    del deferred[run_id]
                    batch.insert(0, (entry[1], None))
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[Record, OnCommit | None]]) -> None:
        rows: dict[str, Record] = {}
        for row, _ in batch:
            rows.pop(row["id"], None)  # keep first-queued order, last snapshot
            rows[row["id"]] = row
        error: BaseException | None = None
        for attempt in range(_WRITE_RETRIES):
            try:
                with self.engine.begin() as conn:
                    self._upsert(conn, list(rows.values()))
                error = None
                break
            except SQLAlchemyError as exc:
                error = exc
                time.sleep(0.2 * (attempt + 1))
        if error is not None:
            log.warning(
                "could not write %d run record(s) to %s: %s",
                len(rows),
                describe_url(self.url),
                str(error).splitlines()[0],
            )
        for _, on_commit in batch:
            if on_commit is not None:
                try:
                    on_commit(error)
                except Exception:  # a callback must not stop the writer
                    log.exception("run record callback failed")

    # -- reads -----------------------------------------------------------------------------

    def get(self, run_id: str) -> Record | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(runs).where(runs.c.id == run_id, runs.c.workflow == self.workflow)
                )
                .mappings()
                .first()
            )
        return None if row is None else _row_to_record(row)

    def page(
        self, *, limit: int, offset: int = 0, status: str | None = None
    ) -> tuple[list[Record], int]:
        """Newest first: ``limit`` records after skipping ``offset``, and the total count."""
        where = [runs.c.workflow == self.workflow]
        if status is not None:
            where.append(runs.c.status == status)
        query = (
            select(runs)
            .where(*where)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            items = [_row_to_record(r) for r in conn.execute(query).mappings()]
            total = conn.execute(select(func.count()).select_from(runs).where(*where)).scalar()
        return items, int(total or 0)

"""The durable local spool between finished runs and the trace sinks.

A finished run is appended here (one SQLite transaction, WAL mode) before ``run_workflow``
returns; that is all a run waits for. Drainers (``observe.trace.drain``) take entries out in
batches per sink, write them, and delete each entry only once its sink has it, so a run
survives SIGTERM, SIGKILL, a crash of any process, and a store that is down for an hour.

Tables::

    records     id, created, size, payload        one pickled run (``SpoolRecord``)
    deliveries  sink, record_id, attempts,        one row per record and sink still to write;
                next_try, lease_until, owner      a drainer leases rows, deletes them when
                                                  written, or backs off after an error
    sinks       id, key, kind, target, ...        where entries go (URLs with no password),
                                                  the last error and success per sink
    counters    name, value                       ``dropped`` (entries evicted at the cap)

Several processes share one spool: SQLite serializes the writers (``busy_timeout``), and a
leased delivery is skipped by every other drainer until its lease expires. The spool is
bounded (``max_bytes``): past the cap the oldest records are dropped, counted, and warned
about once per process. Where it lives: ``spool_path()``.

Durability: ``synchronous=NORMAL`` in WAL mode, so a committed run survives any crash of the
process (SIGKILL included); after a power failure the last few commits may be gone, but the
file is never corrupt. ``CONFIGURABLE_AGENTS_SPOOL_SYNC=full`` syncs every commit (slower).

Checkpoints (copying the WAL back into the database, with an fsync) run on a short-lived
thread of their own (``wal.Checkpoints``), not in whichever commit crosses SQLite's threshold:
that commit would be a run's append, waiting up to tens of ms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...wal import Checkpoints, enable_wal

log = logging.getLogger("configurable_agents.observe")

SPOOL_ENV = "CONFIGURABLE_AGENTS_SPOOL"
SPOOL_MAX_MB_ENV = "CONFIGURABLE_AGENTS_SPOOL_MAX_MB"
SPOOL_SYNC_ENV = "CONFIGURABLE_AGENTS_SPOOL_SYNC"
STATE_DIR_ENV = "CONFIGURABLE_AGENTS_STATE_DIR"
DEFAULT_MAX_MB = 512
LEASE_SECONDS = 60.0
CAP_CHECK_EVERY = 16  # appends between size checks (each costs three PRAGMAs)
FORMAT = 1  # of the pickled payload; a record of another format is set aside, not lost

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sinks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    last_error TEXT,
    last_error_at REAL,
    last_success_at REAL,
    written INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deliveries (
    sink INTEGER NOT NULL,
    record_id INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    owner TEXT,
    PRIMARY KEY (sink, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_record ON deliveries (record_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def state_dir() -> Path:
    """Where our per-user state lives: ``$CONFIGURABLE_AGENTS_STATE_DIR``, else
    ``$XDG_STATE_HOME/configurable-agents`` (``~/.local/state/configurable-agents``)."""
    base = os.environ.get(STATE_DIR_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "configurable-agents"


def spool_path(configured: str | None = None) -> Path:
    """The spool file: ``configured`` (``observability.spool.path``), else
    ``$CONFIGURABLE_AGENTS_SPOOL``, else ``spool.db`` in ``state_dir()``."""
    chosen = configured or os.environ.get(SPOOL_ENV)
    return Path(chosen).expanduser().resolve() if chosen else state_dir() / "spool.db"


def workflow_spool_path(configured: str | None, base: Path | None) -> Path:
    """``observability.spool.path`` of a workflow file, relative to the file's folder."""
    if configured and base is not None and not Path(configured).expanduser().is_absolute():
        configured = str(base / configured)
    return spool_path(configured)


def default_max_bytes() -> int:
    try:
        return int(float(os.environ.get(SPOOL_MAX_MB_ENV, DEFAULT_MAX_MB)) * 1024 * 1024)
    except ValueError:
        return DEFAULT_MAX_MB * 1024 * 1024


@dataclass(frozen=True)
class SinkRef:
    """A destination: ``kind`` (``mlflow``, ``otlp``, ``metrics``) and ``target``, the
    destination with every secret masked (that is all the spool stores of it)."""

    kind: str
    target: str

    @property
    def key(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass
class SpoolRecord:
    """What a drainer needs to write one finished run to its sinks (pickled)."""

    format: int
    kind: str  # "run"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    record_id: int
    created: float
    attempts: int
    payload: bytes

    def load(self) -> SpoolRecord:
        record = pickle.loads(self.payload)
        if not isinstance(record, SpoolRecord) or record.format != FORMAT:
            raise ValueError(f"spool record {self.record_id} has an unknown format")
        return record


@dataclass
class SinkState:
    id: int
    key: str
    kind: str
    target: str
    pending: int
    due: int
    oldest: float | None
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    written: int


class _Append:
    """One ``Spool.append`` waiting for its group's commit."""

    __slots__ = ("done", "error", "record_id", "row")

    def __init__(self, row: tuple[float, bytes, list[int], float]) -> None:
        self.row = row
        self.record_id = 0
        self.error: BaseException | None = None
        self.done = False


class Spool:
    """One spool file, shared by every thread of this process (and other processes)."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self._lock = threading.Lock()
        self._queue: list[_Append] = []  # appends waiting for the next group commit
        self._queue_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._sink_ids: dict[str, int] = {}
        self._warned_full = False
        self._appends = 0
        self._checkpoints = Checkpoints(path, self._lock, "configurable-agents-spool-checkpoint")
        self.dropped = 0  # by this process

    # ------------------------------------------------------------------ connection

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            enable_wal(db)
            sync = "FULL" if os.environ.get(SPOOL_SYNC_ENV, "").lower() == "full" else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("PRAGMA busy_timeout=30000")
            self._checkpoints.setup(db)
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _tx(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self._checkpoints.wrote()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ writing

    def sink_id(self, sink: SinkRef) -> int:
        found = self._sink_ids.get(sink.key)
        if found is not None:
            return found
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO sinks (key, kind, target) VALUES (?, ?, ?)",
                (sink.key, sink.kind, sink.target),
            )
            (found,) = db.execute("SELECT id FROM sinks WHERE key = ?", (sink.key,)).fetchone()
        self._sink_ids[sink.key] = found
        return int(found)

    def append(self, record: SpoolRecord, sinks: Sequence[SinkRef], hold: float = 0.0) -> int:
        """Store one record for ``sinks``; durable when this returns. Returns its id.

        ``hold``: seconds no drainer takes it (unless it ignores backoff, as ``flush`` does)
        while this process may still ``replace`` it (a run whose ``warn`` judges are running).
        """
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        ids = [self.sink_id(s) for s in sinks]
        now = time.time()
        mine = _Append((now, payload, ids, now + hold if hold > 0 else 0.0))
        with self._queue_lock:
            self._queue.append(mine)
        # Group commit: the thread that takes the lock commits every append queued by then in
        # one transaction; the threads that queued meanwhile find theirs done (a busy server
        # makes one commit per group of runs instead of one each).
        with self._lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if mine.error is not None:
            raise mine.error
        if not mine.done:  # the committing thread was interrupted before it began
            raise RuntimeError("the spool commit holding this run was interrupted")
        return mine.record_id

    def _commit(self, batch: list[_Append]) -> None:
        """Insert ``batch`` in one transaction (the caller holds ``_lock``)."""
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for append in batch:
                    append.record_id = _insert(db, *append.row)
                before, self._appends = self._appends, self._appends + len(batch)
                if (self._appends - 1) // CAP_CHECK_EVERY != (before - 1) // CAP_CHECK_EVERY:
                    self._enforce_cap(db)
                db.execute("COMMIT")
                self._checkpoints.wrote()
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException as exc:  # raised in every thread of the group
            # An interrupt (KeyboardInterrupt and the like) is the committing thread's alone:
            # the other threads of the group get a plain error for it.
            error = exc if isinstance(exc, Exception) else RuntimeError(f"interrupted: {exc!r}")
            for append in batch:
                append.error = error
            if not isinstance(exc, Exception):
                raise  # in this thread, as it came
        finally:
            for append in batch:
                append.done = True

    def replace(
        self, record_id: int, record: SpoolRecord | None, sinks: Sequence[SinkRef]
    ) -> tuple[int | None, list[SinkRef]]:
        """Put ``record`` in the place of record ``record_id`` (appended for ``sinks``) for
        each sink no drainer holds (leased) or has written yet, in one transaction; ``None``
        only ends its ``hold``.

        Returns the new record's id (``None`` when nothing was left to replace) and the sinks
        the old record still serves: written already, or being written (a drainer that took
        it when its hold ran out, or a ``flush``)."""
        now = time.time()
        wanted = {self.sink_id(s): s for s in sinks}
        payload = None if record is None else pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        with self._tx() as db:
            rows = db.execute(
                "SELECT sink, lease_until FROM deliveries WHERE record_id = ?", (record_id,)
            ).fetchall()
            free = [int(r[0]) for r in rows if float(r[1]) <= now and int(r[0]) in wanted]
            others = [ref for sink, ref in wanted.items() if sink not in free]
            if not free:
                return None, others
            if payload is None:
                db.executemany(
                    "UPDATE deliveries SET next_try = 0 WHERE sink = ? AND record_id = ?",
                    [(sink, record_id) for sink in free],
                )
                return record_id, others
            new_id = _insert(db, now, payload, free, 0.0)
            for sink in free:
                _forget(db, sink, [record_id])
        return new_id, others

    def _used_bytes(self, db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _enforce_cap(self, db: sqlite3.Connection) -> None:
        if self._used_bytes(db) <= self.max_bytes:
            return
        # Drop the oldest tenth of what the cap allows (by payload size), at least one record.
        target = self.max_bytes // 10
        dropped = freed = 0
        for record_id, size in db.execute("SELECT id, size FROM records ORDER BY id").fetchall():
            if freed >= target and dropped:
                break
            db.execute("DELETE FROM deliveries WHERE record_id = ?", (record_id,))
            db.execute("DELETE FROM records WHERE id = ?", (record_id,))
            dropped += 1
            freed += size
        if not dropped:
            return
        db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (dropped,),
        )
        self.dropped += dropped
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "the trace spool %s is full (%d MB cap): dropped the %d oldest unsent run(s); "
                "is a store down? See: configurable-agents observability status",
                self.path,
                self.max_bytes // (1024 * 1024),
                dropped,
            )

    # ------------------------------------------------------------------ draining

    def claim(
        self, sink: int, owner: str, limit: int, *, ignore_backoff: bool = False
    ) -> list[Entry]:
        """Lease up to ``limit`` due deliveries of ``sink`` (oldest first) with their payloads."""
        now = time.time()
        due = "" if ignore_backoff else "AND d.next_try <= :now"
        with self._tx() as db:
            rows = db.execute(
                "SELECT d.record_id, r.created, d.attempts, r.payload FROM deliveries d "
                "JOIN records r ON r.id = d.record_id "
                f"WHERE d.sink = :sink AND d.lease_until <= :now {due} "
                "ORDER BY d.record_id LIMIT :limit",
                {"sink": sink, "now": now, "limit": limit},
            ).fetchall()
            db.executemany(
                "UPDATE deliveries SET lease_until = ?, owner = ? WHERE sink = ? AND record_id = ?",
                [(now + LEASE_SECONDS, owner, sink, r[0]) for r in rows],
            )
        return [Entry(int(r[0]), float(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    def delivered(self, sink: int, record_ids: Sequence[int]) -> None:
        """The sink has these records: forget them (and records no sink still needs)."""
        if not record_ids:
            return
        with self._tx() as db:
            _forget(db, sink, record_ids)
            db.execute(
                "UPDATE sinks SET last_success_at = ?, written = written + ? WHERE id = ?",
                (time.time(), len(record_ids), sink),
            )

    def failed(self, sink: int, record_ids: Sequence[int], error: str, retry_in: float) -> None:
        """Writing failed: keep them, retry after ``retry_in`` seconds."""
        if not record_ids:
            return
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, next_try = ?, lease_until = 0, "
                "owner = NULL WHERE sink = ? AND record_id = ?",
                [(now + retry_in, sink, r) for r in record_ids],
            )
            db.execute(
                "UPDATE sinks SET last_error = ?, last_error_at = ? WHERE id = ?",
                (error[:2000], now, sink),
            )

    def release(self, sink: int, record_ids: Sequence[int]) -> None:
        """Give leased deliveries back untouched (e.g. this drainer cannot write them)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE deliveries SET lease_until = 0, owner = NULL "
                "WHERE sink = ? AND record_id = ?",
                [(sink, r) for r in record_ids],
            )

    def set_aside(self, sink: int, record_ids: Sequence[int], error: str) -> None:
        """Records that can never be written (unreadable): count them as dropped."""
        with self._tx() as db:
            _forget(db, sink, record_ids)
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (len(record_ids),),
            )
            db.execute(
                "UPDATE sinks SET last_error = ?, last_error_at = ? WHERE id = ?",
                (error[:2000], time.time(), sink),
            )

    def set_counter(self, name: str, value: int) -> None:
        """Store ``value`` under ``name`` in the counters table (``counter`` reads it)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, int(value)),
            )

    def note_error(self, sink: int, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sinks SET last_error = ?, last_error_at = ? WHERE id = ?",
                (error[:2000], time.time(), sink),
            )

    # ------------------------------------------------------------------ reading

    def sinks(self) -> list[SinkState]:
        """Every sink with its pending count, due count and oldest pending entry."""
        now = time.time()
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT s.id, s.key, s.kind, s.target, "
                    "COUNT(d.record_id), "
                    "SUM(CASE WHEN d.next_try <= ? AND d.lease_until <= ? THEN 1 ELSE 0 END), "
                    "MIN(r.created), s.last_error, s.last_error_at, s.last_success_at, "
                    "s.written "
                    "FROM sinks s LEFT JOIN deliveries d ON d.sink = s.id "
                    "LEFT JOIN records r ON r.id = d.record_id GROUP BY s.id ORDER BY s.id",
                    (now, now),
                )
                .fetchall()
            )
        return [
            SinkState(
                id=int(r[0]),
                key=r[1],
                kind=r[2],
                target=r[3],
                pending=int(r[4] or 0),
                due=int(r[5] or 0),
                oldest=r[6],
                last_error=r[7],
                last_error_at=r[8],
                last_success_at=r[9],
                written=int(r[10] or 0),
            )
            for r in rows
        ]

    def pending(self, record_ids: Sequence[int] | None = None) -> int:
        """Deliveries still to make (of ``record_ids`` only, when given)."""
        with self._lock:
            db = self._conn()
            if record_ids is None:
                return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])
            total = 0
            ids = list(record_ids)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                total += db.execute(
                    f"SELECT COUNT(*) FROM deliveries WHERE record_id IN ({marks})", chunk
                ).fetchone()[0]
            return int(total)

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._conn().execute("SELECT value FROM counters WHERE name = ?", (name,))
            found = row.fetchone()
        return int(found[0]) if found else 0


def _insert(
    db: sqlite3.Connection, now: float, payload: bytes, sinks: Sequence[int], next_try: float
) -> int:
    """Insert one record and its deliveries to ``sinks``; returns its id."""
    cursor = db.execute(
        "INSERT INTO records (created, size, payload) VALUES (?, ?, ?)",
        (now, len(payload), payload),
    )
    record_id = int(cursor.lastrowid or 0)
    db.executemany(
        "INSERT INTO deliveries (sink, record_id, next_try) VALUES (?, ?, ?)",
        [(sink, record_id, next_try) for sink in sinks],
    )
    return record_id


def _forget(db: sqlite3.Connection, sink: int, record_ids: Sequence[int]) -> None:
    """Delete the deliveries, and the records no sink still needs."""
    db.executemany(
        "DELETE FROM deliveries WHERE sink = ? AND record_id = ?", [(sink, r) for r in record_ids]
    )
    db.executemany(
        "DELETE FROM records WHERE id = ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries WHERE record_id = ?)",
        [(r, r) for r in record_ids],
    )


_spools: dict[Path, Spool] = {}
_spools_lock = threading.Lock()


def open_spool(path: Path | None = None, max_bytes: int | None = None) -> Spool:
    """The process-wide ``Spool`` for ``path`` (default: ``spool_path()``); ``max_bytes``
    (when given) sets its cap."""
    path = path or spool_path()
    with _spools_lock:
        found = _spools.get(path)
        if found is None:
            found = _spools[path] = Spool(path, max_bytes)
        elif max_bytes is not None:
            found.max_bytes = max_bytes
        return found

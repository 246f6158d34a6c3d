"""Run records in SQL (``tables.runs``), safe for several server replicas on one database.

Writes go through one background thread that commits whatever has queued up in one
transaction (the last snapshot of each run wins), so a busy server makes few, cheap commits
(the only other writer is the lease heartbeat, a few statements every third of a lease). A
caller that must know its row is stored passes ``on_commit``.
In-flight states may be deferred: written only if the run is still in flight a second later,
so that a short run costs one row write, not three.

A write that fails is not lost: ``RunStore._retry_later`` retries it in memory with
exponential backoff (``retry_attempts`` times, up to ``retry_max_delay`` apart, at most
``max_pending`` records); a finished record that still fails then (or when the store closes)
goes to the workflow's durable spool and is written from there (``spooled``). Without a
spool (``spool_path=None``) it is given up with an error in the log.

Replicas: every store has a ``replica`` id and writes its in-flight rows with a lease, which
its heartbeat renews; other replicas fail the runs of one whose leases expire (``leases``).
The schema is created and migrated by Alembic when the store opens (``migrate``).
"""

from __future__ import annotations

import heapq
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..exceptions import Issue, UserError
from . import leases, migrate
from .leases import IN_FLIGHT, STOPPED_REASON, stopped_error
from .tables import (
    API_COLUMNS,
    COLUMNS,
    DEFAULT_DATABASE_FILE,
    create_store_engine,
    default_database_url,
    describe_url,
    metadata,
    runs,
    utcnow,
)

__all__ = [
    "API_COLUMNS",
    "COLUMNS",
    "DEFAULT_DATABASE_FILE",
    "DEFAULT_LEASE_SECONDS",
    "STOPPED_REASON",
    "TRANSIENT_ERRORS",
    "Record",
    "RunStore",
    "default_database_url",
    "describe_url",
    "metadata",
    "stopped_error",
    "utcnow",
]

if TYPE_CHECKING:
    from .spooled import SpooledRecords

log = logging.getLogger("configurable_agents.serve")

STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")
DEFAULT_LEASE_SECONDS = leases.DEFAULT_LEASE_SECONDS
_BATCH = 500
OPEN_DRAIN_SECONDS = 10.0  # at open: how long to write the records an earlier process spooled
TRANSIENT_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)

Record = dict[str, Any]
OnCommit = Callable[[BaseException | None], None]
_Item = tuple[Record, OnCommit | None, bool]  # snapshot, callback, deferred


@dataclass
class _Entry:
    """A row on its way to the database, with whoever waits for it."""

    row: Record
    callbacks: list[OnCommit] = field(default_factory=list)
    attempt: int = 0  # failed writes so far


class RunStore:
    """The ``runs`` table of one workflow: background writes, direct reads, leases."""

    defer_seconds = 1.0  # how long a deferred snapshot waits for a newer one
    retry_delay = 0.5  # first retry of a failed write after this many seconds, then doubling
    retry_max_delay = 30.0
    retry_attempts = 12  # about 3.5 minutes of retries at the defaults
    max_pending = 10_000  # records waiting for a retry; beyond that new failures are given up

    def __init__(
        self,
        url: str | None,
        workflow: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        replica: str | None = None,
        spool_path: Path | None = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ValueError("lease_seconds must be > 0")
        self.url = url or default_database_url()
        self.workflow = workflow
        self.lease_seconds = float(lease_seconds)
        self.replica = (replica or leases.new_replica_id())[:64]
        self.engine = create_store_engine(self.url)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop_beat = threading.Event()
        self._closed = False
        self._draining = False  # the writer is stopping: failures are given up, not retried
        self._pending: dict[str, tuple[float, _Entry]] = {}  # run id -> (when due, entry)
        self._retry_due: list[tuple[float, str]] = []  # heap; stale entries too
        self._failing = False  # the last write failed (log once per outage)
        self._upsert = self._make_upsert()
        # redact_pii: applied on the writer thread, so no raw value is ever stored
        self.redact: Callable[[Record], Record] | None = None
        self.spool_path = spool_path
        self._spooled: SpooledRecords | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> int:
        """Migrate the schema (Alembic, under a lock), mark the runs that can no longer finish
        as failed (return how many), and start the writer and the heartbeat."""
        try:
            migrate.upgrade(self.engine, self.url)
            if self.spool_path is not None and self.spool_path.exists():
                self._open_spooled().drain(OPEN_DRAIN_SECONDS)  # what an earlier process left
            marked = self._fail_orphans()
            marked += self.reap()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise UserError(
                Issue(
                    f"cannot use the run database {describe_url(self.url)}: "
                    f"{type(exc).__name__}: {_first_line(exc)}",
                    hint="check --database-url and that the database server is up",
                )
            ) from None
        except BaseException:
            self.engine.dispose()
            raise
        self._thread = threading.Thread(
            target=self._write_loop, name="configurable-agents-records", daemon=True
        )
        self._thread.start()
        self._heartbeat = threading.Thread(
            target=leases.beat,
            args=(self, self._stop_beat),
            name="configurable-agents-leases",
            daemon=True,
        )
        self._heartbeat.start()
        return marked

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (waiting up to ``timeout`` s; failed writes are tried once
        more, not retried for minutes), stop the writer and the heartbeat, dispose the engine.
        ``False`` when the writer did not finish in time."""
        done = True
        self._closed = True
        self._stop_beat.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            done = not self._thread.is_alive()
            self._thread = None
        if self._heartbeat is not None:
            self._heartbeat.join(timeout)
            self._heartbeat = None
        self.engine.dispose()
        return done

    def _open_spooled(self) -> SpooledRecords:
        if self._spooled is None:
            from .spooled import SpooledRecords

            assert self.spool_path is not None
            self._spooled = SpooledRecords(self, self.spool_path)
        return self._spooled

    def _fail_orphans(self) -> int:
        return leases.fail_orphans(self)

    # -- leases (see ``leases``) -------------------------------------------------------------

    def renew(self) -> int:
        """Extend the lease of this replica's in-flight rows; return how many."""
        return leases.renew(self)

    def reap(self) -> int:
        """Mark other replicas' in-flight rows whose lease has passed as failed; return how
        many."""
        return leases.reap(self)

    def lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    # -- writes ----------------------------------------------------------------------------

    def save(
        self, record: Record, on_commit: OnCommit | None = None, *, defer: bool = False
    ) -> None:
        """Queue a snapshot of ``record`` (every column) for writing; ``on_commit(error)`` is
        called once from the writer thread: when it is committed (``error`` None), or when it
        is given up after the retries (the last error).

        ``defer``: write it only if no newer snapshot of the run comes within
        ``defer_seconds`` (for in-flight states: a short run is then written once, finished).
        """
        if self._closed:
            if on_commit is not None:
                on_commit(RuntimeError("the run store is closed"))
            return
        row = {name: record.get(name) for name in API_COLUMNS}
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
            wake = [heap[0][0] for heap in (due, self._retry_due) if heap]
            if self._spooled is not None and self._spooled.next_drain is not None:
                wake.append(self._spooled.next_drain)
            wait = None if not wake else max(0.0, min(wake) - time.monotonic())
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
            batch: dict[str, _Entry] = {}
            for item in items:
                if item is None:
                    stop = True
                    self._draining = True
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
                    self._add(batch, row, [on_commit] if on_commit else [])
            now = time.monotonic()
            while due and (stop or due[0][0] <= now):
                when, run_id = heapq.heappop(due)
                entry = deferred.get(run_id)
                if entry is not None and entry[0] == when:
                    del deferred[run_id]
                    if run_id not in batch:  # a newer snapshot came meanwhile
                        self._add(batch, entry[1], [])
            while self._retry_due and (stop or self._retry_due[0][0] <= now):
                when, run_id = heapq.heappop(self._retry_due)
                pending = self._pending.get(run_id)
                if pending is not None and pending[0] == when:
                    del self._pending[run_id]
                    if run_id in batch:
                        batch[run_id].callbacks.extend(pending[1].callbacks)
                    else:
                        batch[run_id] = pending[1]
            if batch:
                self._write(list(batch.values()))
            spooled = self._spooled
            due_at = None if spooled is None or stop else spooled.next_drain
            if spooled is not None and due_at is not None and time.monotonic() >= due_at:
                spooled.drain()

    def _add(self, batch: dict[str, _Entry], row: Record, callbacks: list[OnCommit]) -> None:
        """Put a snapshot in ``batch`` (replacing an older one of its run, and a failed write
        of it waiting for a retry, whose callbacks now wait for this one)."""
        run_id = row["id"]
        entry = batch.pop(run_id, None)
        pending = self._pending.pop(run_id, None)
        waiting = (entry.callbacks if entry else []) + (pending[1].callbacks if pending else [])
        batch[run_id] = _Entry(row, waiting + callbacks)

    def _write(self, entries: list[_Entry]) -> None:
        error = self.try_write([e.row for e in entries])
        if error is None:
            done = entries
        elif len(entries) > 1 and not isinstance(error, TRANSIENT_ERRORS):
            # Not the database being away: find the row(s) it refuses, write the others.
            done = []
            for entry in entries:
                single = self.try_write([entry.row])
                if single is None:
                    done.append(entry)
                else:
                    self._retry_later(entry, single)
        else:
            done = []
            for entry in entries:
                self._retry_later(entry, error)
        if done and self._failing and not self._pending:
            log.warning("run records are written to %s again", describe_url(self.url))
            self._failing = False
        for entry in done:
            _notify(entry, None)

    def try_write(self, rows: list[Record], redact: bool = True) -> BaseException | None:
        """Upsert ``rows`` in one transaction (stamped with this replica and its lease);
        the error, or None."""
        lease = self.lease_end()
        if redact and self.redact is not None:
            try:
                rows = [self.redact(row) for row in rows]
            except Exception as exc:  # noqa: BLE001 - retried: never stored unredacted
                return exc
        stamped = [
            {
                **row,
                "owner": self.replica,
                "lease_until": lease if row.get("status") in IN_FLIGHT else None,
            }
            for row in rows
        ]
        try:
            with self.engine.begin() as conn:
                self._upsert(conn, stamped)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the rows are retried
            return exc
        return None

    def _retry_later(self, entry: _Entry, error: BaseException) -> None:
        """Where a record whose write failed goes: retried in this process with exponential
        backoff, a bounded number of times, then given up (its callbacks get the error).
        The one function to change to hand such records to a durable spool instead."""
        if not self._failing:
            self._failing = True
            log.warning(
                "could not write run record(s) to %s: %s: %s; retrying",
                describe_url(self.url),
                type(error).__name__,
                _first_line(error),
            )
        entry.attempt += 1
        run_id = entry.row["id"]
        if (
            self._draining
            or entry.attempt > self.retry_attempts
            or len(self._pending) >= self.max_pending
        ):
            if self._spool_row(entry, error):
                return
            log.error(
                "gave up writing run record %s (%s) to %s after %d attempt(s): %s: %s",
                run_id,
                entry.row.get("status"),
                describe_url(self.url),
                entry.attempt,
                type(error).__name__,
                _first_line(error),
            )
            _notify(entry, error)
            return
        delay = min(self.retry_max_delay, self.retry_delay * 2 ** (entry.attempt - 1))
        when = time.monotonic() + delay * random.uniform(0.8, 1.2)
        self._pending[run_id] = (when, entry)
        heapq.heappush(self._retry_due, (when, run_id))

    def _spool_row(self, entry: _Entry, error: BaseException) -> bool:
        """Keep a finished record the database would not take in the durable spool (its
        callbacks hear it is stored: it is, on disk); say if so."""
        if self.spool_path is None or entry.row.get("status") not in FINISHED:
            return False
        try:
            row = self.redact(entry.row) if self.redact is not None else entry.row
            self._open_spooled().append(row, error)
        except Exception as exc:  # noqa: BLE001 - then it is given up, as without a spool
            log.error("could not keep run record %s in the spool: %s", entry.row["id"], exc)
            return False
        _notify(entry, None)
        return True

    def spooled_pending(self) -> int:
        """Records of this store waiting in the spool for the database."""
        return 0 if self._spooled is None else self._spooled.pending()

    def pending_retries(self) -> int:
        """Records whose write failed and waits for a retry."""
        return len(self._pending)

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

    def delete_older(self, cutoff: datetime, *, dry_run: bool = False) -> int:
        """``retention_days``: delete (or count) this workflow's finished records created
        before ``cutoff`` (UTC); runs still in flight are kept."""
        from sqlalchemy import delete

        where = [
            runs.c.workflow == self.workflow,
            runs.c.created_at < cutoff,
            runs.c.status.not_in(list(IN_FLIGHT)),
        ]
        with self.engine.begin() as conn:
            if dry_run:
                found = conn.execute(select(func.count()).select_from(runs).where(*where))
                return int(found.scalar() or 0)
            return int(conn.execute(delete(runs).where(*where)).rowcount or 0)

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
        # Two statements, each read at its own moment (SQLite, PostgreSQL's READ COMMITTED):
        # runs saved or finished in between must not make a page contradict itself (CI once
        # listed total 1 with no items). A page short of ``limit`` is the last one, so its
        # items give the exact total; an empty one says at most ``offset``; a full one says
        # at least what it holds (the count may be a little off: more pages may follow).
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(runs).where(*where)).scalar()
            items = [_row_to_record(r) for r in conn.execute(query).mappings()]
        found = int(total or 0)
        if not items:
            return items, min(found, offset)
        if len(items) < limit:
            return items, offset + len(items)
        return items, max(found, offset + len(items))


def _row_to_record(row: Any) -> Record:
    return {name: row[name] for name in COLUMNS}


def _notify(entry: _Entry, error: BaseException | None) -> None:
    for on_commit in entry.callbacks:
        try:
            on_commit(error)
        except Exception:  # a callback must not stop the writer
            log.exception("run record callback failed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

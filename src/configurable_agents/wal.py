"""SQLite files of our own (the spool, the spend ledger, the Pushgateway totals, run records):
switching a file to WAL mode when several processes open it at once.

``PRAGMA journal_mode=WAL`` on a new file that several connections switch at once answers
some of them "database is locked" at once, without waiting on the busy timeout (eight
processes opening a new spool together hit it, a test with threads too), and a file another
connection holds longer than the busy timeout answers the same. ``enable_wal`` retries for up
to ``timeout`` seconds, then lets the error through.

``Checkpoints`` moves a file's checkpoints (copying the WAL back into the database, with an
fsync) off the commit path, onto a short-lived thread: left to SQLite, the commit that crosses
its threshold does the copy, and that commit may be a run's append, waiting tens of ms.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from typing import Any

__all__ = ["Checkpoints", "enable_wal"]

log = logging.getLogger("configurable_agents")

CHECKPOINT_BYTES = 4 * 1024 * 1024  # WAL size that starts a checkpoint (SQLite's default)
CHECK_EVERY = 16  # write transactions between looks at the WAL's size
FORCE = 4  # times CHECKPOINT_BYTES: a checkpoint that holds off this process's writers


def enable_wal(conn: Any, timeout: float = 30.0) -> None:
    """Put ``conn``'s database in WAL mode (a ``sqlite3`` connection or DB-API cursor)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.2)


class Checkpoints:
    """Checkpoints of one WAL-mode file, on a thread of their own.

    ``setup(conn)`` turns SQLite's automatic checkpoints off on a connection that writes;
    ``wrote()``, called after each write transaction while holding ``lock`` (the lock that
    serializes this process's writers), looks at the WAL's size at the first write and every
    ``CHECK_EVERY`` after, and past ``CHECKPOINT_BYTES`` starts a ``PASSIVE`` checkpoint on a
    thread (it does not block writers). The WAL starts over only after a checkpoint that
    copied all of it, which writes arriving meanwhile prevent: under a steady stream a WAL past
    ``FORCE`` times the threshold is checkpointed holding ``lock`` (those writers wait for it
    once). A failed checkpoint is logged at debug level; the next look tries again.
    """

    def __init__(self, path: Any, lock: Any, thread_name: str) -> None:
        self.path = path
        self.wal = f"{path}-wal"
        self.lock = lock
        self.thread_name = thread_name
        self.running = False
        self._writes = 0

    def setup(self, conn: sqlite3.Connection) -> None:
        # A WAL that a checkpoint emptied shrinks back to half the threshold, so its size tells.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={CHECKPOINT_BYTES // 2}")

    def wrote(self) -> None:
        writes, self._writes = self._writes, self._writes + 1
        if writes % CHECK_EVERY or self.running:
            return
        if self._size() <= CHECKPOINT_BYTES:
            return
        self.running = True
        threading.Thread(target=self._run, name=self.thread_name, daemon=True).start()

    def _size(self) -> int:
        try:
            return os.stat(self.wal).st_size
        except OSError:
            return 0

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                if self._size() > FORCE * CHECKPOINT_BYTES:
                    with self.lock:
                        checkpoint(db)
                else:
                    checkpoint(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.debug("checkpoint of %s failed: %s", self.wal, exc)
        finally:
            self.running = False


def checkpoint(conn: sqlite3.Connection) -> None:
    """One ``PASSIVE`` checkpoint of ``conn``'s database."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

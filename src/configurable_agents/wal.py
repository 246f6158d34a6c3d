"""SQLite files of our own (the spool, the spend ledger, the Pushgateway totals, run records):
switching a file to WAL mode when several processes open it at once.

``PRAGMA journal_mode=WAL`` on a new file that several connections switch at once answers
some of them "database is locked" at once, without waiting on the busy timeout (eight
processes opening a new spool together hit it, a test with threads too), and a file another
connection holds longer than the busy timeout answers the same. ``enable_wal`` retries for up
to ``timeout`` seconds, then lets the error through.
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any

__all__ = ["enable_wal"]


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

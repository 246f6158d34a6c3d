"""``wal.enable_wal``: many connections switching one new file to WAL mode at once all get
there (SQLite answers some of them "database is locked" at once, busy timeout or not), and a
file held longer than the timeout is still an error."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from configurable_agents.wal import enable_wal


def test_connections_racing_to_switch_a_new_file_to_wal_all_succeed(tmp_path: Path) -> None:
    errors: list[str] = []
    for trial in range(40):  # raw PRAGMA journal_mode=WAL fails about 1 trial in 10 here
        path = tmp_path / f"new-{trial}.db"
        barrier = threading.Barrier(12)

        def connect_and_write(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            barrier.wait()
            try:
                enable_wal(db)
                db.execute("CREATE TABLE IF NOT EXISTS t (x)")
                db.execute("INSERT INTO t VALUES (1)")
            except sqlite3.Error as exc:
                errors.append(str(exc))
            finally:
                db.close()

        threads = [threading.Thread(target=connect_and_write) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def held(path: Path, seconds: float) -> threading.Thread:
    """Hold ``path`` exclusively for ``seconds`` (from a thread)."""
    ready = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        ready.set()
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


def test_a_file_held_past_the_busy_timeout_is_waited_for(tmp_path: Path) -> None:
    thread = held(tmp_path / "new.db", 0.5)
    db = sqlite3.connect(tmp_path / "new.db", timeout=0.05)
    enable_wal(db, timeout=10)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    thread.join()


def test_a_file_held_past_the_timeout_is_an_error(tmp_path: Path) -> None:
    thread = held(tmp_path / "new.db", 1.5)
    db = sqlite3.connect(tmp_path / "new.db", timeout=0.05)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(db, timeout=0.3)
    assert time.monotonic() - started < 1.4
    db.close()
    thread.join()

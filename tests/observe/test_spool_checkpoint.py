"""Spool checkpoints run off the caller's path: no run's append copies the WAL back into the
database (an fsync, tens of ms); a thread of the spool's own does, once the WAL is big, and
the WAL then starts over, cut back to half the threshold. Under a steady stream of appends
(which keep a checkpoint from copying everything) a WAL far past the threshold is
checkpointed with this process's appends held off, so it cannot grow without end."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from configurable_agents import wal
from configurable_agents.observe.trace.spool import FORMAT, SinkRef, Spool, SpoolRecord

SINK = SinkRef("mlflow", '{"uri": "sqlite:///x.db"}')
LIMIT = 256 * 1024
BLOB = os.urandom(16 * 1024)


class OwnedLock:
    """The spool's lock, knowing which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()


@pytest.fixture
def spool(tmp_path: Path, monkeypatch) -> Spool:
    monkeypatch.setattr(wal, "CHECKPOINT_BYTES", LIMIT)
    spool = Spool(tmp_path / "spool.db")
    spool._lock = spool._checkpoints.lock = OwnedLock()  # type: ignore[assignment]
    return spool


def checkpoints(spool: Spool, monkeypatch) -> list[tuple[str, bool]]:
    """(thread name, append lock held) of each checkpoint of ``spool``."""
    seen: list[tuple[str, bool]] = []
    checkpoint = wal.checkpoint

    def recorded(db: sqlite3.Connection) -> None:
        held = spool._lock.owner == threading.get_ident()  # type: ignore[attr-defined]
        seen.append((threading.current_thread().name, held))
        checkpoint(db)

    monkeypatch.setattr(wal, "checkpoint", recorded)
    return seen


def wait_idle(spool: Spool) -> None:
    deadline = time.monotonic() + 10
    while spool._checkpoints.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not spool._checkpoints.running


def append(spool: Spool, n: int, blob: bytes = BLOB) -> list[int]:
    return [spool.append(SpoolRecord(FORMAT, "run", {"i": i, "b": blob}), [SINK]) for i in range(n)]


def test_the_wal_is_checkpointed_on_a_thread_of_its_own_and_starts_over(
    spool: Spool, monkeypatch
) -> None:
    seen = checkpoints(spool, monkeypatch)
    assert spool._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    ids = append(spool, 17)  # 17 x 16 KiB: past LIMIT at the 17th write, a look at the WAL
    wait_idle(spool)
    assert seen == [("configurable-agents-spool-checkpoint", False)]
    ids += append(spool, 1, b"")  # the WAL starts over and is cut to LIMIT / 2
    assert Path(f"{spool.path}-wal").stat().st_size <= LIMIT // 2
    assert spool.pending(ids) == len(ids)  # nothing lost on the way


def test_a_wal_far_past_the_threshold_is_checkpointed_holding_off_appends(
    spool: Spool, monkeypatch
) -> None:
    seen = checkpoints(spool, monkeypatch)
    spool._checkpoints.running = True  # as if checkpoints kept losing the race with appends
    ids = append(spool, wal.FORCE * 16 + 16)
    assert not seen
    spool._checkpoints.running = False
    ids += append(spool, wal.CHECK_EVERY, b"")
    wait_idle(spool)
    assert seen == [("configurable-agents-spool-checkpoint", True)]
    ids += append(spool, 1, b"")
    assert Path(f"{spool.path}-wal").stat().st_size <= LIMIT // 2
    assert spool.pending(ids) == len(ids)


def test_a_spool_opened_on_a_big_wal_checkpoints_at_its_first_write(
    spool: Spool, monkeypatch
) -> None:
    """A process that opens a spool left with a big WAL (another process wrote it, then was
    killed) looks at the WAL at its first write, not 16 writes later."""
    ids = append(spool, 15)  # 240 KiB, no look since the first write
    spool._checkpoints.running = True  # (no checkpoint from this one)
    ids += append(spool, 2)  # past LIMIT
    seen = checkpoints(spool, monkeypatch)
    other = Spool(spool.path)
    other._lock = other._checkpoints.lock = OwnedLock()  # type: ignore[assignment]
    ids += append(other, 1, b"")
    wait_idle(other)
    assert seen == [("configurable-agents-spool-checkpoint", False)]
    assert other.pending(ids) == len(ids)

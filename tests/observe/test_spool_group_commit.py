"""Group commit in the spool: appends from many threads at once (a busy server) share one
transaction, each durable when its ``append`` returns; a failed commit fails every append of
its group, and none of them is half stored."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from configurable_agents.observe.trace import spool as spool_module
from configurable_agents.observe.trace.spool import FORMAT, SinkRef, Spool, SpoolRecord

SINK = SinkRef("mlflow", '{"uri": "sqlite:///x.db"}')
THREADS = 8


def appends_queued_behind_the_lock(spool: Spool) -> tuple[list[Any], list[threading.Thread]]:
    """Start THREADS appends while the test holds the spool's lock, so that they all queue."""
    spool.sink_id(SINK)
    results: list[Any] = []

    def append(i: int) -> None:
        try:
            results.append(spool.append(SpoolRecord(FORMAT, "run", {"i": i}), [SINK]))
        except Exception as exc:  # noqa: BLE001 - what the test checks
            results.append(exc)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(THREADS)]
    with spool._lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(spool._queue) < THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(spool._queue) == THREADS
    for thread in threads:
        thread.join(10)
    return results, threads


def test_appends_queued_together_share_one_commit(tmp_path: Path, monkeypatch) -> None:
    spool = Spool(tmp_path / "spool.db")
    groups: list[int] = []
    commit = Spool._commit

    def counted(self: Spool, batch: list[Any]) -> None:
        groups.append(len(batch))
        commit(self, batch)

    monkeypatch.setattr(Spool, "_commit", counted)
    results, _ = appends_queued_behind_the_lock(spool)
    assert groups == [THREADS]  # one transaction for the eight runs
    assert sorted(results) == list(range(1, THREADS + 1))  # each its own record id
    assert spool.pending(results) == THREADS
    # on disk, as a new process sees them
    db = sqlite3.connect(tmp_path / "spool.db")
    assert db.execute("SELECT count(*) FROM records").fetchone() == (THREADS,)
    db.close()
    # one thread alone commits its own append at once
    record_id = spool.append(SpoolRecord(FORMAT, "run", {"i": "alone"}), [SINK])
    assert groups == [THREADS, 1] and record_id == THREADS + 1


def test_a_failed_group_commit_fails_every_append_of_the_group(tmp_path, monkeypatch) -> None:
    spool = Spool(tmp_path / "spool.db")
    insert = spool_module._insert
    calls = []

    def fails_on_the_third(*args: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return insert(*args)

    monkeypatch.setattr(spool_module, "_insert", fails_on_the_third)
    results, _ = appends_queued_behind_the_lock(spool)
    assert len(results) == THREADS
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert spool.pending() == 0  # rolled back: none of the group half stored
    monkeypatch.setattr(spool_module, "_insert", insert)
    assert spool.append(SpoolRecord(FORMAT, "run", {}), [SINK]) > 0  # the spool works on


def test_an_interrupt_in_the_committing_thread_still_ends_the_group(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool.db")
    spool.sink_id(SINK)
    queued = spool_module._Append((time.time(), b"x", [1], 0.0))
    spool._queue.append(queued)

    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(spool_module, "_insert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        spool.append(SpoolRecord(FORMAT, "run", {}), [SINK])
    assert queued.done and queued.error is not None  # no silent id 0
    # the interrupt is the committing thread's alone: the other thread gets a plain error
    assert isinstance(queued.error, RuntimeError) and "KeyboardInterrupt" in str(queued.error)


def test_an_append_its_group_never_committed_is_an_error_not_id_0(tmp_path, monkeypatch):
    """The committing thread took the group and was stopped before its transaction began (an
    asynchronous exception): an append of that group is not stored, and says so."""
    spool = Spool(tmp_path / "spool.db")
    monkeypatch.setattr(Spool, "_commit", lambda self, batch: None)  # the group, lost
    with pytest.raises(RuntimeError, match="interrupted"):
        spool.append(SpoolRecord(FORMAT, "run", {}), [SINK])

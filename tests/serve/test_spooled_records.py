"""Run records whose write failed go to the durable spool and are written from there: by the
store once the database is back, by the next store to open, by ``observability flush``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from configurable_agents.cli.app import app as cli
from configurable_agents.observe.trace.spool import open_spool
from configurable_agents.serve import RunStore, create_app, runner
from configurable_agents.serve.spooled import KIND

from .procs import wait_until
from .test_run_store import DOWN, flaky, record, saved
from .test_server import REVIEW


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def stores(tmp_path: Path, spool: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable]:
    monkeypatch.setattr(RunStore, "retry_delay", 0.02)
    monkeypatch.setattr(RunStore, "retry_max_delay", 0.05)
    monkeypatch.setattr(RunStore, "retry_attempts", 2)
    made: list[RunStore] = []

    def make(**kwargs: Any) -> RunStore:
        store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}", "demo", spool_path=spool, **kwargs)
        store.open()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def pending_records(spool: Path) -> int:
    return sum(s.pending for s in open_spool(spool).sinks() if s.kind == KIND)


def test_a_finished_record_the_database_keeps_refusing_is_spooled_then_written(
    stores: Callable[..., RunStore], spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores()
    calls = flaky(store, 3, DOWN)  # the first write and both retries fail
    row = record("succeeded", outputs={"article": "kept"})
    with caplog.at_level(logging.WARNING, "configurable_agents.serve"):
        assert saved(store, row) is None  # stored: on disk, in the spool
        assert "kept in the spool" in caplog.text and "gave up" not in caplog.text
        assert store.pending_retries() == 0  # not held in memory
        wait_until(lambda: store.get(row["id"]) is not None, 10)  # the writer drains it
        assert store.get(row["id"])["outputs"] == {"article": "kept"}
        wait_until(lambda: store.spooled_pending() == 0)
        assert calls[0] >= 4 and pending_records(spool) == 0
        # logged by the writer just after the spool is empty: wait for it, not race it
        wait_until(lambda: "spooled run records of 'demo' are written" in caplog.text)


def test_records_spooled_by_a_store_that_closed_are_written_when_the_next_one_opens(
    stores: Callable[..., RunStore], spool: Path
) -> None:
    first = stores()
    flaky(first, 10_000, DOWN)  # the database is away until this store is gone
    rows = [record("succeeded"), record("failed", error={"type": "X", "message": "m"})]
    for row in rows:
        assert saved(first, row) is None
    running = record("running")
    first.save(running)  # in flight: superseded later, never spooled
    assert first.close()
    assert pending_records(spool) == 2
    second = stores()  # a restarted server on the same database and spool
    assert pending_records(spool) == 0
    assert [second.get(r["id"])["status"] for r in rows] == ["succeeded", "failed"]


def test_observability_flush_writes_spooled_run_records(
    stores: Callable[..., RunStore], spool: Path
) -> None:
    first = stores()
    flaky(first, 10_000, DOWN)
    row = record("succeeded")
    assert saved(first, row) is None
    first.close()
    assert pending_records(spool) == 1
    result = CliRunner().invoke(cli, ["observability", "flush", "--spool", str(spool)])
    assert result.exit_code == 0, result.output
    assert pending_records(spool) == 0
    check = RunStore(first.url, "demo")
    try:
        assert check.get(row["id"])["status"] == "succeeded"
    finally:
        check.engine.dispose()


def test_a_record_the_database_refuses_for_good_is_set_aside_not_retried_forever(
    stores: Callable[..., RunStore], spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    from configurable_agents.observe.trace import drain

    monkeypatch.setattr(drain, "MAX_ATTEMPTS", 2)
    store = stores()
    flaky(store, 10_000, IntegrityError("INSERT", {}, Exception("refused")))
    row = record("succeeded")
    assert saved(store, row) is None
    spooled = store._spooled
    assert spooled is not None
    for _ in range(3):
        spooled.drain(timeout=2)
    assert pending_records(spool) == 0 and store.get(row["id"]) is None
    assert open_spool(spool).counter("dropped") >= 1


def test_the_server_spools_what_it_cannot_store_and_writes_it_at_its_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "STORE_TIMEOUT", 0.2)
    monkeypatch.setattr(RunStore, "retry_delay", 0.02)
    monkeypatch.setattr(RunStore, "retry_max_delay", 0.05)
    monkeypatch.setattr(RunStore, "retry_attempts", 2)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ids = []
    with TestClient(create_app(REVIEW, database_url=url)) as client:
        live = client.app.state.runner  # type: ignore[attr-defined]
        flaky(live.store, 10_000, DOWN)
        for topic in ("a", "b", "c"):
            answer = client.post("/runs", json={"inputs": {"topic": topic}})
            assert answer.status_code == 200
            ids.append(answer.json()["id"])
        wait_until(lambda: not live._live and not live._tasks, 20)  # memory stays bounded
        assert live.store.spooled_pending() == 3
    with TestClient(create_app(REVIEW, database_url=url)) as client:  # the database is back
        for run_id in ids:
            assert client.get(f"/runs/{run_id}").json()["status"] == "succeeded"

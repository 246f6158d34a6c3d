"""The run store on its own: Alembic migrations (fresh, pre-Alembic, concurrent, too new),
leases between replicas, and failed writes retried instead of lost."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from configurable_agents.exceptions import UserError
from configurable_agents.serve import RunStore, create_app, migrate, runner
from configurable_agents.serve.records import STOPPED_REASON, utcnow
from configurable_agents.serve.tables import metadata

from .procs import wait_until
from .test_server import REVIEW

# The table as servers made it before migrations existed (revision 0001, no version table).
LEGACY = sa.MetaData()
sa.Table(
    "runs",
    LEGACY,
    *(
        sa.Column(name, kind, primary_key=name == "id")
        for name, kind in (
            ("id", sa.String(32)),
            ("workflow", sa.String(200)),
            ("workflow_version", sa.String(64)),
            ("status", sa.String(16)),
            ("inputs", sa.JSON),
            ("tags", sa.JSON),
            ("outputs", sa.JSON),
            ("error", sa.JSON),
            ("run_id", sa.String(32)),
            ("trace_id", sa.String(64)),
            ("cost_usd", sa.Float),
            ("usage", sa.JSON),
            ("duration_ms", sa.Float),
            ("nodes", sa.JSON),
            ("created_at", sa.DateTime),
            ("started_at", sa.DateTime),
            ("finished_at", sa.DateTime),
        )
    ),
)


def record(status: str = "running", workflow: str = "demo", **extra: Any) -> dict[str, Any]:
    return {
        "id": os.urandom(16).hex(),
        "workflow": workflow,
        "workflow_version": "1.0.0",
        "status": status,
        "inputs": {"topic": "t"},
        "tags": {},
        "created_at": utcnow(),
        **extra,
    }


def saved(store: RunStore, row: dict[str, Any], timeout: float = 10) -> BaseException | None:
    """Save ``row`` and wait for the store's verdict (None: committed)."""
    done = threading.Event()
    result: list[BaseException | None] = []

    def on_commit(error: BaseException | None) -> None:
        result.append(error)
        done.set()

    store.save(row, on_commit)
    assert done.wait(timeout), "no verdict from the store"
    return result[0]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def opened() -> Iterator[Callable[..., RunStore]]:
    stores: list[RunStore] = []

    def open_store(url: str, workflow: str = "demo", **options: Any) -> RunStore:
        store = RunStore(url, workflow, **options)
        store.open()
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


# -- migrations -----------------------------------------------------------------------------


def columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("runs")}
    finally:
        engine.dispose()


def test_a_fresh_database_is_migrated_to_the_newest_revision(sqlite_url: str, opened) -> None:
    store = opened(sqlite_url)
    assert migrate.current(store.engine) == migrate.head() == "0003"
    assert {"owner", "lease_until", "judges"} <= columns(sqlite_url)
    assert saved(store, record("succeeded")) is None


@pytest.mark.parametrize("made_by", ["0001 (before leases)", "0003 (create_all)"])
def test_a_database_from_before_migrations_is_stamped_and_upgraded(
    sqlite_url: str, opened, made_by: str
) -> None:
    engine = sa.create_engine(sqlite_url)
    old = record("succeeded", owner="x") if made_by.startswith("0003") else record("succeeded")
    (LEGACY if made_by.startswith("0001") else metadata).create_all(engine)
    table = (LEGACY if made_by.startswith("0001") else metadata).tables["runs"]
    with engine.begin() as conn:
        conn.execute(table.insert().values(**old))
    engine.dispose()
    store = opened(sqlite_url)
    assert migrate.current(store.engine) == "0003"
    kept = store.get(old["id"])
    assert kept is not None and kept["inputs"] == {"topic": "t"} and kept["status"] == "succeeded"


@pytest.mark.parametrize("databases", ["one", "several"])
def test_replicas_opening_at_once_migrate_once(tmp_path: Path, databases: str) -> None:
    """Six stores open at once: on one file (the file lock), on six files (the process lock:
    Alembic's ``op`` is process-wide)."""
    names = [f"runs{i}.db" if databases == "several" else "runs.db" for i in range(6)]
    stores = [RunStore(f"sqlite:///{tmp_path / name}", "demo") for name in names]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def open_one(store: RunStore) -> None:
        start.wait()
        try:
            store.open()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert all(migrate.current(store.engine) == migrate.head() for store in stores)
    finally:
        for store in stores:
            store.close()


def test_replicas_opening_at_once_migrate_once_on_postgresql(postgres_tracking_uri: str) -> None:
    stores = [RunStore(postgres_tracking_uri, "demo") for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def open_one(store: RunStore) -> None:
        start.wait()
        try:
            store.open()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert migrate.current(stores[0].engine) == migrate.head()
    finally:
        for store in stores:
            store.close()


def test_a_database_migrated_by_a_newer_version_is_a_clear_error(sqlite_url: str, opened) -> None:
    opened(sqlite_url).close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(UserError) as info:
        RunStore(sqlite_url, "demo").open()
    issue = info.value.issues[0]
    assert "schema revision '9999'" in issue.message and "newer" in issue.message
    assert issue.hint and "upgrade configurable-agents" in issue.hint


def test_no_password_in_messages(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://ana:s3cr3t-pw@127.0.0.1:1/nodb"
    store = RunStore(url, "demo")
    with pytest.raises(UserError) as info:
        store.open()
    assert "s3cr3t-pw" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(UserError) as bad:
        RunStore("ana:s3cr3t-pw@127.0.0.1/db", "demo")  # not a URL
    assert "s3cr3t-pw" not in str(bad.value)


# -- leases ---------------------------------------------------------------------------------


def test_a_live_replica_keeps_its_runs_and_a_dead_ones_runs_fail_after_the_lease(
    sqlite_url: str, opened, caplog: pytest.LogCaptureFixture
) -> None:
    alive = opened(sqlite_url, lease_seconds=0.6, replica="alive")
    dying = opened(sqlite_url, lease_seconds=0.6, replica="dying")
    # a replica of another workflow on the same database reaps for everyone
    opened(sqlite_url, "another_workflow", lease_seconds=0.6, replica="watcher")
    mine, theirs = record(), record("queued")
    assert saved(alive, mine) is None and saved(dying, theirs) is None
    assert alive.get(mine["id"])["owner"] == "alive"
    dying._stop_beat.set()  # its heartbeat stops: as if the process were gone
    time.sleep(0.2)
    failed = wait_until(lambda: (r := alive.get(theirs["id"]))["status"] == "failed" and r, 10)
    assert failed["error"]["type"] == "ServerStopped"
    assert failed["error"]["message"].startswith(STOPPED_REASON + ": server replica dying ")
    assert failed["finished_at"] is not None and failed["lease_until"] is None
    time.sleep(1.5)  # well past the lease: the live replica's run is still running
    assert alive.get(mine["id"])["status"] == "running"
    assert alive.get(mine["id"])["lease_until"] > utcnow()
    assert "their lease expired" in caplog.text


def test_runs_of_a_previous_process_with_the_same_replica_id_fail_at_open(
    sqlite_url: str, opened
) -> None:
    first = opened(sqlite_url, replica="fixed-id")
    left = record()
    assert saved(first, left) is None
    first._stop_beat.set()
    second = opened(sqlite_url, replica="fixed-id")
    assert second.get(left["id"])["status"] == "failed"


# -- failed writes --------------------------------------------------------------------------


def flaky(store: RunStore, failures: int, error: BaseException) -> list[int]:
    """Make the store's next ``failures`` writes raise ``error``; returns the call count."""
    real = store._upsert
    calls = [0]

    def upsert(conn: Any, rows: list[dict[str, Any]]) -> None:
        calls[0] += 1
        if calls[0] <= failures:
            raise error
        real(conn, rows)

    store._upsert = upsert  # type: ignore[method-assign]
    return calls


DOWN = OperationalError("INSERT", {}, Exception("connection refused"))


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStore, "retry_delay", 0.05)
    monkeypatch.setattr(RunStore, "retry_max_delay", 0.2)


def test_a_failed_write_is_retried_until_it_is_stored(
    sqlite_url: str, opened, fast_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    store = opened(sqlite_url)
    calls = flaky(store, 4, DOWN)
    row = record("succeeded")
    assert saved(store, row) is None
    assert calls[0] == 5 and store.get(row["id"])["status"] == "succeeded"
    assert store.pending_retries() == 0
    assert "could not write run record(s)" in caplog.text and "retrying" in caplog.text
    assert "written to" in caplog.text and "again" in caplog.text


def test_a_write_that_keeps_failing_is_given_up_after_the_retries(
    sqlite_url: str, opened, fast_retries: None, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(RunStore, "retry_attempts", 3)
    store = opened(sqlite_url)
    calls = flaky(store, 100, DOWN)
    with caplog.at_level(logging.ERROR, "configurable_agents.serve"):
        error = saved(store, record("succeeded"))
    assert isinstance(error, OperationalError) and calls[0] == 4
    assert "gave up writing run record" in caplog.text and store.pending_retries() == 0


def test_a_newer_snapshot_replaces_one_waiting_for_a_retry(
    sqlite_url: str, opened, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RunStore, "retry_delay", 5.0)  # the retry would come much later
    store = opened(sqlite_url)
    flaky(store, 1, DOWN)
    row = record("running")
    verdicts: list[BaseException | None] = []
    store.save(row, verdicts.append)
    wait_until(lambda: store.pending_retries() == 1)
    assert saved(store, {**row, "status": "succeeded"}) is None  # written now, not in 5 s
    assert verdicts == [None] and store.get(row["id"])["status"] == "succeeded"
    assert store.pending_retries() == 0


def test_a_row_the_database_refuses_does_not_hold_up_the_others(
    sqlite_url: str, opened, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RunStore, "retry_attempts", 1)
    store = opened(sqlite_url)
    real = store._upsert
    poison = record("succeeded")

    def upsert(conn: Any, rows: list[dict[str, Any]]) -> None:
        if any(r["id"] == poison["id"] for r in rows):
            raise IntegrityError("INSERT", {}, Exception("refused"))
        real(conn, rows)

    store._upsert = upsert  # type: ignore[method-assign]
    others = [record("succeeded") for _ in range(3)]
    results: dict[str, BaseException | None] = {}
    done = threading.Event()

    def verdict(run_id: str) -> Callable[[BaseException | None], None]:
        def on_commit(error: BaseException | None) -> None:
            results[run_id] = error
            if len(results) == 4:
                done.set()

        return on_commit

    for row in (others[0], poison, *others[1:]):  # one batch
        store.save(row, verdict(row["id"]))
    assert done.wait(10)
    assert all(results[r["id"]] is None for r in others)
    assert isinstance(results[poison["id"]], IntegrityError)
    assert all(store.get(r["id"]) is not None for r in others)


def test_text_utf8_cannot_encode_is_stored_escaped_not_lost(sqlite_url: str, opened) -> None:
    store = opened(sqlite_url)
    row = record("succeeded", outputs={"text": "a\ud800b", "nul": "\x00"})
    assert saved(store, row) is None
    assert store.get(row["id"])["outputs"] == {"text": "a\ud800b", "nul": "\x00"}


def test_the_server_keeps_an_unstored_run_in_memory_until_it_is_stored(
    write_workflow: Any, tmp_path: Path, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "STORE_TIMEOUT", 0.3)
    monkeypatch.setattr(RunStore, "retry_delay", 0.5)
    monkeypatch.setattr(RunStore, "retry_max_delay", 0.5)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with TestClient(create_app(REVIEW, database_url=url)) as client:
        live = client.app.state.runner  # type: ignore[attr-defined]
        calls = flaky(live.store, 3, DOWN)  # about 1.5 s of failed writes
        data = client.post("/runs", json={"inputs": {"topic": "bees"}}).json()
        assert data["status"] == "succeeded"
        assert live.store.get(data["id"]) is None  # not written yet ...
        assert client.get(f"/runs/{data['id']}").json() == data  # ... but served from memory
        wait_until(lambda: live.store.get(data["id"]) is not None, 20)
        wait_until(lambda: not live._live and not live._tasks)  # then it leaves memory
        assert client.get(f"/runs/{data['id']}").json() == data and calls[0] >= 4


def test_the_server_forgets_a_run_the_store_gave_up(
    tmp_path: Path, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "STORE_TIMEOUT", 0.2)
    monkeypatch.setattr(RunStore, "retry_attempts", 2)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with TestClient(create_app(REVIEW, database_url=url)) as client:
        live = client.app.state.runner  # type: ignore[attr-defined]
        flaky(live.store, 1000, DOWN)
        for _ in range(3):
            assert client.post("/runs", json={"inputs": {"topic": "b"}}).status_code == 200
        wait_until(lambda: not live._live and not live._tasks, 20)  # memory stays bounded
        assert live.store.pending_retries() == 0

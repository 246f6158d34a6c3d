"""Schema migrations of the run database (Alembic), run by every server as it opens the store.

The revisions live in ``migrations/versions`` inside the package. Alembic's version table is
``configurable_agents_alembic_version`` (not ``alembic_version``, which an application sharing
the database may have). ``upgrade`` holds a lock for the whole check-stamp-upgrade step, so
replicas starting together migrate once: a PostgreSQL advisory lock (transaction-scoped), a file
lock next to a SQLite database file, and within one process a thread lock (Alembic's ``op`` and
``context`` are process-wide, so two stores migrating different databases at once would mix).
A database made before migrations existed (a ``runs`` table
and no version table) is stamped with the revision its columns match, then upgraded.

To add a revision: a new file in ``migrations/versions`` with ``revision`` /
``down_revision`` / ``upgrade()`` / ``downgrade()`` (see the existing ones), and the same change
to ``tables.runs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from ..exceptions import Issue, UserError
from .tables import describe_url, metadata, sqlite_file

log = logging.getLogger("configurable_agents.serve")

VERSION_TABLE = "configurable_agents_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: any constant bigint that other applications are unlikely to use
ADVISORY_LOCK_KEY = 0x43415F52554E53  # "CA_RUNS"
_PROCESS_LOCK = threading.Lock()
# Columns by revision: how a database made before migrations is stamped.
_REVISION_COLUMNS = (
    ("0003", {"judges"}),
    ("0002", {"owner", "lease_until"}),
    (
        "0001",
        {
            "id", "workflow", "workflow_version", "status", "inputs", "tags", "outputs", "error",
            "run_id", "trace_id", "cost_usd", "usage", "duration_ms", "nodes", "created_at",
            "started_at", "finished_at",
        },
    ),
)  # fmt: skip


def script_directory() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head() -> str:
    revision = script_directory().get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's revision (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: Engine, url: str) -> tuple[str | None, str]:
    """Bring the database to the newest revision, under the lock; return (from, to)."""
    script = script_directory()
    target = script.get_current_head()
    assert target is not None
    # Alembic's ``context`` and ``op`` are process-wide: one migration at a time per process.
    with _PROCESS_LOCK, _file_lock(url), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        before = _stamp_legacy(conn, script, url)
        if before == target:
            return before, target
        _check_known(script, before, url)

        def steps(revision: Any, _context: Any) -> Any:
            return script._upgrade_revs(target, revision)

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with EnvironmentContext(config, script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn, target_metadata=metadata, version_table=VERSION_TABLE)
            with env.begin_transaction():
                env.run_migrations()
    log.info("run database %s migrated from %s to %s", describe_url(url), before, target)
    return before, target


def _stamp_legacy(conn: Connection, script: ScriptDirectory, url: str) -> str | None:
    """The database's revision; a ``runs`` table from before migrations is stamped first."""
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    if revision is not None:
        return revision
    existing = inspect(conn)
    if not existing.has_table("runs"):
        return None
    have = {c["name"] for c in existing.get_columns("runs")}
    base = _REVISION_COLUMNS[-1][1]
    missing = sorted(base - have)
    if missing:
        raise UserError(
            Issue(
                f"the database {describe_url(url)} already has a 'runs' table that is not a "
                f"configurable-agents run table (no column(s) {', '.join(missing)})",
                hint="give the server its own database with --database-url "
                "(an MLflow tracking database has a 'runs' table of its own)",
            )
        )
    stamp = next(rev for rev, columns in _REVISION_COLUMNS if columns <= have)
    context.stamp(script, stamp)
    log.info("run database %s predates migrations: stamped %s", describe_url(url), stamp)
    return stamp


def _check_known(script: ScriptDirectory, revision: str | None, url: str) -> None:
    if revision is None:
        return
    try:
        script.get_revision(revision)
    except CommandError:
        raise UserError(
            Issue(
                f"the run database {describe_url(url)} is at schema revision {revision!r}, "
                "which this version of configurable-agents does not know (a newer one "
                "migrated it)",
                hint="upgrade configurable-agents on this server, or use another --database-url",
            )
        ) from None


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    """An exclusive lock on ``<database file>.lock`` (SQLite files; a no-op elsewhere)."""
    path = sqlite_file(url)
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking has to do
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

"""The run database's table and engine (SQLAlchemy Core): SQLite by default, PostgreSQL (or any
SQLAlchemy database) by URL.

One table, ``runs``, one row per run, scoped by workflow name (servers of different workflows
can share one database). Its schema is created and changed only by the Alembic migrations in
``migrations/`` (``migrate.upgrade``); ``runs`` below describes the newest revision.
Timestamps are naive UTC on every database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from ..exceptions import Issue, MissingExtraError, UserError
from ..wal import enable_wal

DEFAULT_DATABASE_FILE = "configurable_agents_runs.db"
CONNECT_TIMEOUT = 10  # seconds, PostgreSQL: a server that does not answer is an error, not a hang

MAX_WORKFLOW_NAME = 200  # the lengths of the workflow and workflow_version columns
MAX_WORKFLOW_VERSION = 64

metadata = MetaData()
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(MAX_WORKFLOW_NAME), nullable=False),
    Column("workflow_version", String(MAX_WORKFLOW_VERSION), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("outputs", JSON),
    Column("error", JSON),
    Column("run_id", String(32)),
    Column("trace_id", String(64)),
    Column("cost_usd", Float),
    Column("usage", JSON),
    Column("duration_ms", Float),
    Column("nodes", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    # revision 0002: the replica that runs it, and until when its claim holds (in flight only)
    Column("owner", String(64)),
    Column("lease_until", DateTime),
    # revision 0003: the judges' verdicts (run.judges.JudgeResult.to_dict), warn ones added
    # once they arrive
    Column("judges", JSON),
    Index("ix_runs_workflow_created", "workflow", "created_at"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_status_lease", "status", "lease_until"),
)
COLUMNS = tuple(c.name for c in runs.columns)
# What the API shows of a record (the lease is the store's business).
API_COLUMNS = tuple(name for name in COLUMNS if name not in ("owner", "lease_until"))


def utcnow() -> datetime:
    """Naive UTC (what the ``DateTime`` columns hold on every database)."""
    return datetime.now(UTC).replace(tzinfo=None)


def default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


def describe_url(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a database URL that cannot be parsed>"


def json_dumps(value: Any) -> str:
    """JSON for the database: UTF-8 text as it is, except that a value holding characters UTF-8
    cannot encode (lone surrogates, e.g. from a model's ``"\\ud800"``) is stored escaped, so that
    it is kept as it was instead of failing the write."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, default=str, ensure_ascii=True)
    return text


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).expanduser()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=NORMAL`` and a busy timeout,
    PostgreSQL a connect timeout and pre-ping."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            Issue(
                "--database-url is not a database URL",
                hint="e.g. sqlite:///runs.db or postgresql+psycopg2://user:pw@host/db",
            )
        ) from None
    sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"json_serializer": json_dumps}
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool  # one shared in-memory database
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() in ("psycopg2", "psycopg"):
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as exc:
        if parsed.get_backend_name() == "postgresql":
            raise MissingExtraError("psycopg2-binary", "postgres", "A PostgreSQL run store") from (
                exc
            )
        raise UserError(
            Issue(f"no database driver for {describe_url(url)}: {exc}", hint="install the driver")
        ) from None
    except (ArgumentError, ValueError) as exc:
        raise UserError(Issue(f"bad database URL {describe_url(url)}: {exc}")) from None
    if sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            if parsed.database not in (None, "", ":memory:"):
                enable_wal(cursor, 10.0)
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine

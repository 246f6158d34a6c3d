"""The report indexes on MLflow's tables (``store.REPORT_INDEXES`` on SQLite,
``store.POSTGRES_REPORT_INDEXES`` on PostgreSQL): their DDL, which exist, and creating the
missing ones (``report.sql.ensure_report_indexes`` calls ``create`` inside its transaction).

On SQLite an index whose stored definition is not the current one (a store indexed by an
older version) is dropped and created again; on PostgreSQL a changed definition gets a new
name (PostgreSQL rewrites the text it keeps).
"""

from __future__ import annotations

from typing import Any

from .store import POSTGRES_REPORT_INDEXES, REPORT_INDEXES


def sqlite_sql(name: str) -> str:
    """``CREATE INDEX`` of a SQLite report index, as SQLite keeps it in ``sqlite_master``."""
    table, columns, where = REPORT_INDEXES[name]
    return f"CREATE INDEX {name} ON {table} ({', '.join(columns)}) WHERE {where}"


def postgres_sql(name: str) -> str:
    table, keys, include, where = POSTGRES_REPORT_INDEXES[name]
    return (
        f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(keys)}) "
        f"INCLUDE ({', '.join(include)}) WHERE {where}"
    )


def existing(conn: Any) -> dict[str, str]:
    """The indexes of the store (name → definition), of the tables the search path sees."""
    if conn.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
    else:
        query = (
            "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_class c "
            "WHERE c.relkind = 'i' AND pg_table_is_visible(c.oid)"
        )
    return {str(name): str(sql or "") for name, sql in conn.exec_driver_sql(query)}


def missing(conn: Any) -> list[str]:
    """The report indexes this store lacks, or has with an older definition (SQLite)."""
    found = existing(conn)
    if conn.dialect.name == "sqlite":
        return [n for n in REPORT_INDEXES if found.get(n) != sqlite_sql(n)]
    return [n for n in POSTGRES_REPORT_INDEXES if n not in found]


def create(conn: Any) -> list[str]:
    """Create the missing report indexes (SQLite: rebuild outdated ones); their names."""
    import sqlalchemy as sa

    sqlite = conn.dialect.name == "sqlite"
    found = existing(conn)
    done: list[str] = []
    for name in missing(conn):
        if sqlite:
            if name in found:
                conn.exec_driver_sql(f"DROP INDEX {name}")
            conn.exec_driver_sql(sqlite_sql(name))
        else:  # text(): the driver's paramstyle escapes the LIKE pattern's percent signs
            conn.execute(sa.text(postgres_sql(name)))
        done.append(name)
    return done

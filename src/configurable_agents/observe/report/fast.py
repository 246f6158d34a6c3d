"""``report costs`` on a SQLite store straight from the rollup, with nothing but ``sqlite3``.

The common case: a SQLite store at a schema revision the report SQL knows, whose rollup covers
the selection. It is answered here with the very queries of ``rollup.collect`` over a read-only
``sqlite3`` connection (one snapshot), so a ``report costs`` command does not import
SQLAlchemy, about half of its run time. Anything else (no store, no rollup, an unknown
experiment or schema revision, experiments the rollup does not cover) returns None and the
full path (``report.sql``) answers, with its checks and messages.
"""

from __future__ import annotations

import sqlite3
import urllib.parse

from ..trace.targets import sqlite_path
from . import rollup
from .model import Filters, Groups
from .store import known_revisions

_NEEDED = {"trace_info", "spans", "experiments", "alembic_version", rollup.ROLLUP}


def collect(uri: str, f: Filters, *, spans: bool, buckets: bool) -> Groups | None:
    path = sqlite_path(uri)
    if path is None or not path.is_file() or not rollup.aligned(f):
        return None
    try:
        db = sqlite3.connect(
            f"file:{urllib.parse.quote(str(path))}?mode=ro",
            uri=True,
            timeout=10,
            isolation_level=None,
        )
    except sqlite3.Error:
        return None
    try:
        db.execute("BEGIN")  # one snapshot for every query

        run = rollup.Run(lambda query, params: db.execute(query, params).fetchall(), True)

        tables = {row[0] for row in run("SELECT name FROM sqlite_master WHERE type = 'table'", ())}
        if not tables >= _NEEDED:
            return None
        revision = run("SELECT version_num FROM alembic_version", ())
        if not revision or revision[0][0] not in known_revisions():
            return None
        active = (
            "SELECT experiment_id FROM experiments "
            "WHERE (lifecycle_stage IS NULL OR lifecycle_stage != 'deleted')"
        )
        if f.experiment is None:
            rows = run(active, ())
        else:
            rows = run(active + " AND name = ?", (f.experiment,))
        ids = [int(row[0]) for row in rows]
        if not ids:
            return None
        return rollup.collect(run, f, ids, spans=spans, buckets=buckets)
    except sqlite3.Error:
        return None
    finally:
        db.close()

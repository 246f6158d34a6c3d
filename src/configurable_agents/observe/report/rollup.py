"""The report rollup: cost and token sums kept up to date as traces are written, so that
``report costs`` reads a few thousand rows instead of every span.

Table ``ca_report_rollup`` in the tracking database (SQLite and PostgreSQL stores), one row per
``(experiment_id, grain, kind, trace_name, status, bucket_ms, name)`` with the sums ``n``,
``cost_pico``, ``input_tokens``, ``output_tokens``, ``total_tokens``, ``duration_ms``:

=========  ==============================  ==================================================
kind       name                            sums over
=========  ==============================  ==================================================
``trace``  ``''``                          our traces: n = runs; cost, tokens and execution
                                           time from ``trace_info``
``model``  the model (``spans.model_name``)  their CHAT_MODEL spans: n = calls; cost, tokens
``node``   the node id (AGENT span name)   their AGENT spans: n = visits; cost, node tokens
                                           (total = input + output)
``other``  ``''``                          traces without our ``ca.workflow`` tag: only
                                           counted, per experiment (grain 0), for coverage
=========  ==============================  ==================================================

Two grains of the same sums: ``grain = 1`` rows per 15-minute bucket (UTC) the traces started
in (``bucket_ms``, its start), and ``grain = 0`` rows over all time (``bucket_ms = 0``), which
answer reports without a time range or periods from a few dozen rows. Every UTC offset is a
multiple of 15 minutes, so local days, ISO weeks and months, every ``--period`` and every
``--start-date`` / ``--end-date`` (local midnights) are whole buckets; a time range that is not
(``cost_report(start=<any ms>)``) is answered from the span tables instead. Costs are summed
as integers (picodollars, ``model.to_pico``), as the span-table queries and the search_traces
path do, so all three give identical numbers.

Who writes it: the trace writer, in the transaction that inserts the trace rows
(``add_traces``, called by ``MlflowSink._write_sql`` for the traces it inserts), and
``rebuild`` (from ``trace_info``, ``trace_tags`` and ``spans``): when the table is created
(the writer's first open of a store, or ``report index``) and for stale experiments on
``report index``.

Coverage: a report uses the rollup only when, for every experiment it covers, the traces the
rollup counts (``trace`` + ``other``) equal ``COUNT(*)`` of that experiment's ``trace_info``
rows (an index-only count). Traces written another way (an older version, MLflow's client, an
``mlflow server``) or deleted break the equality and the report reads the span tables, with
the same numbers, until ``report index`` rebuilds those experiments. ``report profile``
always reads the spans: percentiles cannot be summed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .model import (
    BUCKET_MS,
    WORKFLOW_PREFIX,
    CallGroup,
    Filters,
    Groups,
    TraceGroup,
    bucket_of,
    to_pico,
    workflow_of,
)
from .store import CHAT_USAGE, pico, sa_module, tables, token_exprs

log = logging.getLogger("configurable_agents.observe")

ROLLUP = "ca_report_rollup"
DIALECTS = ("sqlite", "postgresql")
KEY = ("experiment_id", "grain", "kind", "trace_name", "status", "bucket_ms", "name")
ALL_TIME, BUCKETS = 0, 1  # grains
SUMS = ("n", "cost_pico", "input_tokens", "output_tokens", "total_tokens", "duration_ms")
_MAX_NAME = 1000  # longer names are not rolled up (the report then reads the spans)
_table: Any = None


def rollup_table() -> Any:
    global _table
    if _table is None:
        sa = sa_module()
        _table = sa.Table(
            ROLLUP,
            sa.MetaData(),
            sa.Column("experiment_id", sa.Integer, nullable=False),
            sa.Column("grain", sa.SmallInteger, nullable=False),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("trace_name", sa.Text, nullable=False),
            sa.Column("status", sa.String(50), nullable=False),
            sa.Column("bucket_ms", sa.BigInteger, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            *(sa.Column(name, sa.BigInteger, nullable=False) for name in SUMS),
            sa.PrimaryKeyConstraint(*KEY, name=f"{ROLLUP}_pk"),
            sqlite_with_rowid=False,
        )
    return _table


# --------------------------------------------------------------------------- writing


def add_traces(session: Any, experiment_id: int | str, rows: Sequence[Any], traces: Any) -> None:
    """Add traces just inserted to the rollup, in the caller's transaction.

    ``rows``: the ``trace_info`` rows inserted (dicts of column values, exactly as written);
    ``traces``: ``(TraceInfo, spans)`` pairs of the batch (MLflow ``Span`` objects, or the
    writer's own span records) (those not in ``rows`` are skipped).
    Does nothing on a store without the rollup table (it is created by ``report index`` or the
    writer's first open) or of another database.
    """
    conn = session.connection()
    dialect = conn.dialect.name
    if not rows or dialect not in DIALECTS:
        return
    sa = sa_module()
    if not sa.inspect(conn).has_table(ROLLUP):
        return
    try:
        sums = _sums(int(experiment_id), rows, traces)
    except Exception as exc:  # noqa: BLE001 - never fail a trace write for the rollup
        log.debug("traces not rolled up (reports will read the spans): %r", exc)
        return
    if any(len(key[3]) > _MAX_NAME or len(key[6]) > _MAX_NAME for key in sums):
        return
    values = [dict(zip(KEY + SUMS, (*key, *s), strict=True)) for key, s in sorted(sums.items())]
    conn.execute(upsert(dialect), values)


def upsert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` adding to the sums of existing rows."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = rollup_table()
    stmt: Any = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=list(KEY), set_={c: table.c[c] + stmt.excluded[c] for c in SUMS}
    )


def _sums(eid: int, rows: Sequence[Any], traces: Any) -> dict[tuple[Any, ...], list[int]]:
    from mlflow.store.tracking.utils.trace_analytics import bounded_model_dimension

    inserted = {row["request_id"]: row for row in rows}
    acc: dict[tuple[Any, ...], list[int]] = {}

    def add(key: tuple[Any, ...], *values: Any) -> None:
        eid, kind, name, status, bucket, label = key
        for grain_key in (
            (eid, BUCKETS, kind, name, status, bucket, label),
            (eid, ALL_TIME, kind, name, status, 0, label),
        ):
            found = acc.get(grain_key)
            if found is None:
                acc[grain_key] = [int(v or 0) for v in values]
            else:
                for i, v in enumerate(values):
                    found[i] += int(v or 0)

    for info, spans in traces:
        row = inserted.pop(info.trace_id, None)
        if row is None:
            continue
        name, status = row.get("trace_name") or "", row.get("status") or ""
        bucket = bucket_of(int(row["timestamp_ms"]))
        add(
            (eid, "trace", name, status, bucket, ""),
            1,
            to_pico(row.get("total_cost")),
            row.get("input_tokens"),
            row.get("output_tokens"),
            row.get("total_tokens"),
            row.get("execution_time_ms"),
        )
        for span in spans:
            kind = span.span_type
            if kind == "CHAT_MODEL":
                usage = _attribute(span, CHAT_USAGE)
                usage = usage if isinstance(usage, dict) else {}
                model = bounded_model_dimension(_attribute(span, "mlflow.llm.model")) or ""
                add(
                    (eid, "model", name, status, bucket, model),
                    1,
                    to_pico(_cost(span)),
                    usage.get("input_tokens"),
                    usage.get("output_tokens"),
                    usage.get("total_tokens"),
                    0,
                )
            elif kind == "AGENT":
                tin = int(_attribute(span, "node.input_tokens") or 0)
                tout = int(_attribute(span, "node.output_tokens") or 0)
                key = (eid, "node", name, status, bucket, span.name or "")
                add(key, 1, to_pico(_cost(span)), tin, tout, tin + tout, 0)
    return acc


def _attribute(span: Any, key: str) -> Any:
    """An attribute of an MLflow ``Span`` or of one of our ``SpanRecord``s."""
    get = getattr(span, "get_attribute", None)
    return get(key) if get is not None else span.attributes.get(key)


def _cost(span: Any) -> Any:
    cost = _attribute(span, "mlflow.llm.cost")
    return cost.get("total_cost") if isinstance(cost, dict) else None


# --------------------------------------------------------------------------- rebuilding


def create(conn: Any) -> None:
    rollup_table().create(conn, checkfirst=True)


def rebuild(conn: Any, experiment_ids: Sequence[int] | None = None) -> None:
    """Recompute the rollup rows of ``experiment_ids`` (all when None) from MLflow's tables,
    inside the caller's write transaction (on PostgreSQL the table is locked first, so a
    writer's concurrent ``add_traces`` waits and lands after the rebuild, not in it)."""
    sa = sa_module()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(f"LOCK TABLE {ROLLUP} IN EXCLUSIVE MODE")
    t = tables(sa)
    r = rollup_table()
    ti, tags, sc = t["trace_info"].c, t["trace_tags"].c, t["spans"].c
    delete = r.delete()
    scope = []
    if experiment_ids is not None:
        ids = list(experiment_ids)
        delete = delete.where(r.c.experiment_id.in_(ids))
        scope.append(ti.experiment_id.in_(ids))
    conn.execute(delete)
    ours = (
        sa.select(sa.literal(1))
        .where(tags.key == "ca.workflow", tags.request_id == ti.request_id)
        .exists()
    )
    bucket = ti.timestamp_ms - ti.timestamp_ms % BUCKET_MS
    name = sa.func.coalesce(ti.trace_name, "")
    status = sa.func.coalesce(ti.status, "")

    def total(expr: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(expr), 0)

    zero = sa.literal(0)
    # Our traces (one pass over trace_info, with the tag check) into a temporary table with
    # their group keys and sums; each type's spans read alone into another (on SQLite that
    # query reads cost and tokens from the report index instead of parsing the span JSON,
    # which it would not do inside a join), then joined to the first.
    md = sa.MetaData()
    traced = sa.Table(
        "ca_rollup_traces",
        md,
        sa.Column("request_id", sa.String(50), primary_key=True),
        sa.Column("experiment_id", sa.Integer),
        sa.Column("bucket_ms", sa.BigInteger),
        sa.Column("trace_name", sa.Text),
        sa.Column("status", sa.String(50)),
        *(sa.Column(name, sa.BigInteger) for name in ("cost", "t0", "t1", "t2", "ms")),
        prefixes=["TEMPORARY"],
        sqlite_with_rowid=False,
    )
    picked = sa.Table(
        "ca_rollup_spans",
        md,
        sa.Column("trace_id", sa.String(50)),
        sa.Column("label", sa.Text),
        *(sa.Column(name, sa.BigInteger) for name in ("cost", "t0", "t1", "t2")),
        prefixes=["TEMPORARY"],
    )
    md.drop_all(conn, checkfirst=True)
    md.create_all(conn)
    o, p = traced.c, picked.c
    try:
        values = [ti.total_cost, ti.input_tokens, ti.output_tokens, ti.total_tokens]
        keys = sa.select(ti.request_id, ti.experiment_id, bucket, name, status).add_columns(
            *(sa.func.coalesce(v, 0) for v in [pico(sa, dialect, values[0]), *values[1:]]),
            sa.func.coalesce(ti.execution_time_ms, 0),
        )
        conn.execute(
            traced.insert().from_select([c.name for c in traced.c], keys.where(ours, *scope))
        )
        group = [o.experiment_id, o.trace_name, o.status, o.bucket_ms]
        sums = [sa.func.count(), *(sa.func.sum(o[name]) for name in ("cost", "t0", "t1", "t2"))]
        query = (
            sa.select(o.experiment_id, sa.literal(BUCKETS), sa.literal("trace"), *group[1:])
            .add_columns(sa.literal(""), *sums, sa.func.sum(o.ms))
            .group_by(*group)
        )
        conn.execute(r.insert().from_select(list(KEY + SUMS), query))
        # the other traces, only counted
        every = sa.select(ti.experiment_id, sa.func.count()).where(*scope)
        ours_count = sa.select(o.experiment_id, sa.func.count()).group_by(o.experiment_id)
        counted = dict(conn.execute(ours_count).all())
        blank = dict(zip(KEY + SUMS, (0, ALL_TIME, "other", "", "", 0, "", *[0] * 6), strict=True))
        others = [
            blank | {"experiment_id": e, "n": n - counted.get(e, 0)}
            for e, n in conn.execute(every.group_by(ti.experiment_id))
            if n > counted.get(e, 0)
        ]
        if others:
            conn.execute(r.insert(), others)
        in_scope = [] if experiment_ids is None else [sc.experiment_id.in_(list(experiment_ids))]
        for kind, span_type, label, chat in (
            ("model", "CHAT_MODEL", sc.model_name, True),
            ("node", "AGENT", sc.name, False),
        ):
            tokens = [
                sa.func.coalesce(e, 0) for e in token_exprs(sa, dialect, sc.content, chat=chat)
            ]
            if not chat:
                tokens.append(tokens[0] + tokens[1])
            rows = sa.select(
                sc.trace_id, sa.func.coalesce(label, ""), pico(sa, dialect, sc.total_cost), *tokens
            ).where(sc.type == sa.literal_column(f"'{span_type}'"), *in_scope)
            conn.execute(picked.delete())
            conn.execute(picked.insert().from_select([c.name for c in picked.c], rows))
            sums = [sa.func.count(), *(total(p[name]) for name in ("cost", "t0", "t1", "t2"))]
            query = (
                sa.select(o.experiment_id, sa.literal(BUCKETS), sa.literal(kind), *group[1:])
                .add_columns(p.label, *sums, zero)
                .select_from(picked.join(traced, o.request_id == p.trace_id))
                .group_by(*group, p.label)
            )
            conn.execute(r.insert().from_select(list(KEY + SUMS), query))
    finally:
        md.drop_all(conn)
    c = r.c
    fine = [c.grain == BUCKETS]
    if experiment_ids is not None:
        fine.append(c.experiment_id.in_(list(experiment_ids)))
    coarse = (
        sa.select(c.experiment_id, sa.literal(ALL_TIME), c.kind, c.trace_name, c.status, zero)
        .add_columns(c.name, *(sa.func.sum(c[name]) for name in SUMS))
        .where(*fine)
        .group_by(c.experiment_id, c.kind, c.trace_name, c.status, c.name)
    )
    conn.execute(r.insert().from_select(list(KEY + SUMS), coarse))


# --------------------------------------------------------------------------- reading
#
# Plain SQL through ``Run`` (a DB-API query runner, ``runner(conn)`` for a SQLAlchemy
# connection) so that ``report.fast`` can answer from a bare ``sqlite3`` connection, without
# importing SQLAlchemy, with exactly these queries.


class Run:
    """Runs one query (``?`` placeholders) and returns its rows."""

    def __init__(self, execute: Callable[[str, tuple[Any, ...]], list[Any]], sqlite: bool):
        self.execute = execute
        self.sqlite = sqlite

    def __call__(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(query, tuple(params))


def runner(conn: Any) -> Run:
    """``Run`` over a SQLAlchemy connection."""
    pyformat = conn.dialect.name != "sqlite"

    def execute(query: str, params: tuple[Any, ...]) -> list[Any]:
        if pyformat:
            query = query.replace("?", "%s")
        return list(conn.exec_driver_sql(query, params).fetchall())

    return Run(execute, sqlite=not pyformat)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def coverage(run: Run, ids: Sequence[int] | None = None) -> dict[int, tuple[int, int]]:
    """Per experiment (``ids``, or every one): (traces the rollup counts, traces in
    ``trace_info``), the latter exact.

    Counting an experiment's traces walks its range of the ``(experiment_id, timestamp_ms)``
    index (~0.1 s per million traces). On SQLite ``COUNT(*)`` of a whole table is much
    cheaper (it counts b-tree cells, ~20 ms per million), so when that is less work the
    experiment expected to be the biggest is counted as the whole table minus every other
    experiment (all of them, from ``experiments``: still exact)."""
    have = run(
        f"SELECT experiment_id, SUM(n) FROM {ROLLUP} WHERE grain = {ALL_TIME} "
        "AND kind IN ('trace', 'other') GROUP BY experiment_id",
        (),
    )
    rolled = {int(e): int(n or 0) for e, n in have}
    if ids is None:
        want = run("SELECT experiment_id, COUNT(*) FROM trace_info GROUP BY experiment_id", ())
        traced = {int(e): int(n or 0) for e, n in want}
        return {e: (rolled.get(e, 0), traced.get(e, 0)) for e in set(rolled) | set(traced)}
    count = "SELECT COUNT(*) FROM trace_info WHERE experiment_id = ?"
    wanted = list(ids)
    counted: dict[int, int] = {}
    if run.sqlite and wanted:
        every = [int(row[0]) for row in run("SELECT experiment_id FROM experiments", ())]
        biggest = max(wanted, key=lambda e: rolled.get(e, 0))
        others = [e for e in every if e != biggest]
        if sum(rolled.get(e, 0) for e in others) < sum(rolled.get(e, 0) for e in wanted):
            counted = {e: int(run(count, (e,))[0][0]) for e in others}
            total = int(run("SELECT COUNT(*) FROM trace_info", ())[0][0])
            counted[biggest] = total - sum(counted.values())
    for e in wanted:
        if e not in counted:
            counted[e] = int(run(count, (e,))[0][0])
    return {e: (rolled.get(e, 0), counted[e]) for e in wanted}


def stale(run: Run, ids: Sequence[int] | None = None) -> list[int]:
    """The experiments whose rollup does not count what ``trace_info`` holds."""
    return sorted(e for e, (have, want) in coverage(run, ids).items() if have != want)


def all_ours(run: Run, ids: Sequence[int]) -> bool:
    """Whether the rollup covers ``ids`` and says every trace there is ours (no ``other``)."""
    if stale(run, ids):
        return False
    (row,) = run(
        f"SELECT COUNT(*) FROM {ROLLUP} WHERE experiment_id IN ({_marks(ids)}) "
        f"AND grain = {ALL_TIME} AND kind = 'other' AND n > 0",
        list(ids),
    )
    return not row[0]


def aligned(f: Filters) -> bool:
    """The rollup can answer ``f``: period bounds on its buckets, no tag or batch filter (it
    keeps no tags; a batch id is a trace tag)."""
    return (
        not f.tags
        and f.batch is None
        and all(ms is None or ms % BUCKET_MS == 0 for ms in (f.start_ms, f.end_ms))
    )


def collect(run: Run, f: Filters, ids: list[int], *, spans: bool, buckets: bool) -> Groups | None:
    """The report's groups from the rollup (the caller checked the table exists), or None
    when it cannot answer exactly: a time range inside buckets, or experiments it does not
    cover."""
    if not aligned(f) or stale(run, ids):
        return None
    timed = buckets or f.start_ms is not None or f.end_ms is not None
    conds = [f"experiment_id IN ({_marks(ids)})", f"grain = {BUCKETS if timed else ALL_TIME}"]
    params: list[Any] = list(ids)
    for condition, value in (
        ("trace_name = ?", None if f.workflow is None else WORKFLOW_PREFIX + f.workflow),
        ("bucket_ms >= ?", f.start_ms),
        ("bucket_ms < ?", f.end_ms),
        ("status = ?", None if f.status is None else "OK" if f.status == "succeeded" else "ERROR"),
    ):
        if value is not None:
            conds.append(condition)
            params.append(value)
    where = " AND ".join(conds)
    sums = ", ".join(f"COALESCE(SUM({c}), 0)" for c in SUMS)
    bucket = ", bucket_ms" if buckets else ""
    groups = Groups()
    rows = run(
        f"SELECT trace_name{bucket}, "
        "COALESCE(SUM(CASE WHEN status = 'OK' THEN n ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN status = 'ERROR' THEN n ELSE 0 END), 0), "
        f"{sums} FROM {ROLLUP} WHERE kind = 'trace' AND {where} GROUP BY trace_name{bucket}",
        params,
    )
    for row in rows:
        b = int(row[1]) if buckets else None
        succeeded, failures, n, cost, tin, tout, ttotal, ms = row[-8:]
        g = groups.traces.setdefault((workflow_of(row[0]), b), TraceGroup())
        g.runs += int(n)
        g.succeeded += int(succeeded)
        g.failed += int(failures)
        g.duration_ms += int(ms)
        g.usage.add(cost, tin, tout, ttotal)
    if not groups.traces or not spans:
        return groups
    rows = run(
        f"SELECT name, {sums} FROM {ROLLUP} WHERE kind = 'model' AND {where} GROUP BY name",
        params,
    )
    for model, n, cost, tin, tout, ttotal, _ in rows:
        c = groups.models.setdefault(model, CallGroup())
        c.calls += int(n)
        c.usage.add(cost, tin, tout, ttotal)
    rows = run(
        f"SELECT trace_name, name, {sums} FROM {ROLLUP} WHERE kind = 'node' AND {where} "
        "GROUP BY trace_name, name",
        params,
    )
    for name, node, n, cost, tin, tout, ttotal, _ in rows:
        c = groups.nodes.setdefault((workflow_of(name), node), CallGroup())
        c.calls += int(n)
        c.usage.add(cost, tin, tout, ttotal)
    return groups

"""Reports on SQL tracking stores: aggregated inside the database with SQLAlchemy Core.

``collect`` opens the store (``store.connect``: read only), checks it is an MLflow store at a
schema revision these queries were written for (``store.check_revision``), and answers from
the rollup (``rollup.collect``: a few thousand pre-aggregated rows) when it covers the
selection; otherwise from MLflow's own tables (``trace_info``, ``trace_tags``, ``spans``,
``experiments``). Every span-table query is a ``GROUP BY`` whose result has one row per
workflow, model, node or period; only ``report profile`` fetches one duration per node visit,
for the percentiles.

Tokens per model and per node are span attributes inside the span's JSON ``content`` (the
attribute values are themselves JSON text), read with the dialect's JSON functions; on SQLite
the report indexes (``ensure_report_indexes``) hold them.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from ...exceptions import InputError, Issue
from . import indexes, rollup
from .model import BUCKET_MS, WORKFLOW_PREFIX, CallGroup, Filters, Groups, TraceGroup, workflow_of
from .store import (
    SQLITE_CHAT_TOKENS,
    SQLITE_NODE_TOKENS,
    UnknownSchema,
    check_revision,
    check_store,
    connect,
    experiment_ids,
    pico,
    sa_module,
    scheme,
    table_names,
    tables,
    token_exprs,
)

__all__ = [
    "SQLITE_CHAT_TOKENS",
    "SQLITE_NODE_TOKENS",
    "collect",
    "ensure_report_indexes",
    "missing_report_indexes",
    "recent_count",
]
ROLLUP_SCHEMES = ("sqlite", "postgresql", "postgres")
# The writer's first open of a store with more traces than this leaves the rollup to
# ``report index``: filling it holds the store's write lock for minutes per million traces.
WRITER_BACKFILL_LIMIT = 100_000


# --------------------------------------------------------------------------- maintenance


def ensure_report_indexes(
    tracking_uri: str, *, rollup_mode: Literal["new", "stale", "all"] = "new"
) -> list[str]:
    """Make reports fast on a SQL store; return what was created or rebuilt.

    * SQLite: partial indexes on MLflow's ``spans`` table over the AGENT and CHAT_MODEL spans
      holding the node / model, cost and the token attributes, so span queries read them
      without parsing span JSON, and on ``assessments`` over the judge results (a few seconds
      per 100 000 traces, once; each later trace costs microseconds more to write); one
      whose definition changed since the store was indexed is rebuilt (``indexes``).
    * PostgreSQL: partial indexes for ``report quality`` (the judge results) and ``report
      prompts`` (the node spans run on a registry prompt), ``store.POSTGRES_REPORT_INDEXES``;
      the writer's first open creates them on a store of at most ``WRITER_BACKFILL_LIMIT``
      traces (building them blocks its writers meanwhile), ``report index`` on any.
    * SQLite and PostgreSQL: the rollup table (``rollup``), filled from the existing traces
      when it is created (mode ``"new"``, the writer's: only on a store of at most
      ``WRITER_BACKFILL_LIMIT`` traces; a bigger one waits for ``report index``, and reports
      read its spans meanwhile). ``rollup_mode="stale"`` also rebuilds the experiments it does
      not cover (traces written another way, or deleted); ``"all"`` rebuilds every one.

    All in one transaction. The trace writer calls this (mode ``"new"``) the first time it
    opens a store; ``report index`` calls it with ``"stale"`` (``--rebuild``: ``"all"``).
    Other databases: nothing (``[]``).
    """
    from ..trace.targets import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    kind = scheme(uri)
    if kind not in ROLLUP_SCHEMES:
        return []
    done: list[str] = []
    with connect(uri, write=True) as conn, conn.begin():
        names = table_names(conn)
        check_store(conn, uri, names)
        try:
            check_revision(conn, uri)
        except UnknownSchema as exc:
            raise InputError(
                Issue(
                    f"{exc}: nothing created",
                    hint="reports still work (through MLflow's search_traces, slower)",
                )
            ) from None
        traces: int | None = None

        def small() -> bool:  # what the writer's first open may fill or index
            nonlocal traces
            if traces is None:
                traces = conn.exec_driver_sql("SELECT COUNT(*) FROM trace_info").scalar() or 0
            return rollup_mode != "new" or traces <= WRITER_BACKFILL_LIMIT

        if kind == "sqlite" or (indexes.missing(conn) and small()):
            done += indexes.create(conn)
        if rollup.ROLLUP not in names:
            if small():
                rollup.create(conn)
                rollup.rebuild(conn)
                done.append(rollup.ROLLUP)
        elif rollup_mode == "all":
            rollup.rebuild(conn)
            done.append(f"{rollup.ROLLUP} (rebuilt)")
        elif rollup_mode == "stale":
            stale = rollup.stale(rollup.runner(conn))
            if stale:
                rollup.rebuild(conn, stale)
                done.append(f"{rollup.ROLLUP} (rebuilt for {len(stale)} experiment(s))")
    return done


def missing_report_indexes(tracking_uri: str) -> list[str]:
    """The report indexes a SQLite store lacks or has with an older definition (``[]`` for
    other databases: this is the span-report tip's question, and PostgreSQL's report
    indexes serve ``report quality`` and ``report prompts`` only)."""
    from ..trace.targets import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if scheme(uri) != "sqlite":
        return []
    with connect(uri) as conn:
        return indexes.missing(conn)


# --------------------------------------------------------------------------- selection


class _Selection:
    """The selected traces: conditions on ``trace_info``, and whether spans need them."""

    def __init__(
        self,
        sa: Any,
        conn: Any,
        t: dict[str, Any],
        f: Filters,
        ids: list[int],
        all_ours: bool = False,
    ):
        ti = t["trace_info"].c
        self.sa = sa
        self.t = t
        self.ids = ids
        self.dialect = conn.dialect.name
        conds: list[Any] = []
        everything = f.experiment is None and len(ids) == _count(conn, t["experiments"])
        if not everything:
            conds.append(ti.experiment_id.in_(ids))
        # only traces we wrote: checked per trace only when the store holds others too (the
        # rollup, when it covers these experiments, says so without counting the tags)
        tags = t["trace_tags"].c
        ours = (
            sa.select(sa.func.count()).select_from(t["trace_tags"]).where(tags.key == "ca.workflow")
        )
        if not all_ours and conn.execute(ours).scalar() != _count(conn, t["trace_info"]):
            conds.append(
                sa.select(sa.literal(1))
                .where(tags.key == "ca.workflow", tags.request_id == ti.request_id)
                .exists()
            )
        if f.workflow is not None:
            conds.append(ti.trace_name == WORKFLOW_PREFIX + f.workflow)
        if f.start_ms is not None:
            conds.append(ti.timestamp_ms >= f.start_ms)
        if f.end_ms is not None:
            conds.append(ti.timestamp_ms < f.end_ms)
        if f.status is not None:
            conds.append(ti.status == ("OK" if f.status == "succeeded" else "ERROR"))
        wanted = list(f.tags) + ([("ca.batch_id", f.batch)] if f.batch is not None else [])
        for key, value in wanted:
            conds.append(
                sa.select(sa.literal(1))
                .where(tags.key == key, tags.value == value, tags.request_id == ti.request_id)
                .exists()
            )
        self.trace_conds = conds

    def spans_where(self, span_type: str) -> list[Any]:
        """Conditions on ``spans`` selecting this type's spans of the selected traces."""
        sa = self.sa
        sc = self.t["spans"].c
        out = [sc.type == sa.literal_column(f"'{span_type}'")]
        if self.trace_conds:
            ti = self.t["trace_info"].c
            out.append(sc.trace_id.in_(sa.select(ti.request_id).where(*self.trace_conds)))
        return out


def _count(conn: Any, table: Any) -> int:
    sa = sa_module()
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def _sum(sa: Any, expr: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(expr), 0)


# --------------------------------------------------------------------------- queries


def collect(
    uri: str,
    filters: Filters,
    *,
    spans: bool,
    profile: bool,
    buckets: bool,
    use_rollup: bool = True,
) -> tuple[str, Groups]:
    """``(source, groups)``: ``source`` is ``rollup``, or ``spans`` (the span tables) with
    ``spans-uncovered`` meaning the rollup would have answered had it covered the store.
    Raises ``UnknownSchema`` on a schema revision these queries were not written for."""
    sa = sa_module()
    t = tables(sa)
    groups = Groups()
    with connect(uri) as conn:
        names = table_names(conn)
        check_store(conn, uri, names)
        check_revision(conn, uri)
        ids = experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return "spans", groups
        source = "spans"
        rollup_dialect = conn.dialect.name in rollup.DIALECTS
        has_rollup = rollup_dialect and rollup.ROLLUP in names
        run = rollup.runner(conn)
        if use_rollup and rollup_dialect and not profile and rollup.aligned(filters):
            if has_rollup:
                found = rollup.collect(run, filters, ids, spans=spans, buckets=buckets)
                if found is not None:
                    return "rollup", found
            source = "spans-uncovered"  # the rollup would answer once it covers the store
        all_ours = has_rollup and source == "spans" and rollup.all_ours(run, ids)
        sel = _Selection(sa, conn, t, filters, ids, all_ours)
        _collect_traces(sa, conn, sel, groups, buckets)
        if not groups.traces:
            return source, groups
        if spans:
            _collect_models(sa, conn, sel, groups)
            node_workflows = _node_workflows(sa, conn, sel, groups)
            _collect_nodes(sa, conn, sel, groups, node_workflows)
            if profile:
                _collect_profile(sa, conn, sel, groups, node_workflows)
    return source, groups


def _collect_traces(sa: Any, conn: Any, sel: _Selection, groups: Groups, buckets: bool) -> None:
    ti = sel.t["trace_info"].c
    bucket = ti.timestamp_ms - ti.timestamp_ms % BUCKET_MS
    query = (
        sa.select(
            ti.trace_name,
            bucket if buckets else sa.null(),
            sa.func.count(),
            _sum(sa, sa.case((ti.status == "OK", 1), else_=0)),
            _sum(sa, sa.case((ti.status == "ERROR", 1), else_=0)),
            _sum(sa, pico(sa, sel.dialect, ti.total_cost)),
            _sum(sa, ti.input_tokens),
            _sum(sa, ti.output_tokens),
            _sum(sa, ti.total_tokens),
            _sum(sa, ti.execution_time_ms),
        )
        .where(*sel.trace_conds)
        .group_by(ti.trace_name, *([bucket] if buckets else []))
    )
    for name, b, runs, ok, failed, cost, tin, tout, ttotal, ms in conn.execute(query):
        key = (workflow_of(name), int(b) if b is not None else None)
        g = groups.traces.setdefault(key, TraceGroup())
        g.runs += int(runs)
        g.succeeded += int(ok)
        g.failed += int(failed)
        g.duration_ms += int(ms)
        g.usage.add(cost, tin, tout, ttotal)


def _collect_models(sa: Any, conn: Any, sel: _Selection, groups: Groups) -> None:
    sc = sel.t["spans"].c
    tokens = token_exprs(sa, conn.dialect.name, sc.content, chat=True)
    cost_sum = _sum(sa, pico(sa, sel.dialect, sc.total_cost))
    query = (
        sa.select(sc.model_name, sa.func.count(), cost_sum, *map(_sum_of(sa), tokens))
        .where(*sel.spans_where("CHAT_MODEL"))
        .group_by(sc.model_name)
    )
    for model, calls, cost, tin, tout, ttotal in conn.execute(query):
        c = groups.models.setdefault(model or "", CallGroup())
        c.calls += int(calls)
        c.usage.add(cost, tin, tout, ttotal)


def _sum_of(sa: Any) -> Any:
    return lambda expr: _sum(sa, expr)


def _node_workflows(sa: Any, conn: Any, sel: _Selection, groups: Groups) -> dict[str, set[str]]:
    """The workflows each node id occurs in, among the selected traces."""
    workflows = {wf for wf, _ in groups.traces}
    sc = sel.t["spans"].c
    if len(workflows) == 1:
        (only,) = workflows
        names = sa.select(sc.name).where(*sel.spans_where("AGENT")).distinct()
        return {name: {only} for (name,) in conn.execute(names)}
    ti = sel.t["trace_info"].c
    pairs = (
        sa.select(sc.name, ti.trace_name)
        .select_from(sel.t["spans"].join(sel.t["trace_info"], ti.request_id == sc.trace_id))
        .where(sc.type == sa.literal_column("'AGENT'"), *sel.trace_conds)
        .distinct()
    )
    out: dict[str, set[str]] = {}
    for name, trace_name in conn.execute(pairs):
        out.setdefault(name, set()).add(workflow_of(trace_name))
    return out


def _collect_nodes(
    sa: Any, conn: Any, sel: _Selection, groups: Groups, node_workflows: dict[str, set[str]]
) -> None:
    """Per node id in one streaming pass over the AGENT spans (from the index when it exists);
    a node id used by more than one workflow is then split by workflow with a join."""
    sc = sel.t["spans"].c
    tin, tout = token_exprs(sa, conn.dialect.name, sc.content, chat=False)
    cost_sum = _sum(sa, pico(sa, sel.dialect, sc.total_cost))
    per_name = (
        sa.select(sc.name, sa.func.count(), cost_sum, _sum(sa, tin), _sum(sa, tout))
        .where(*sel.spans_where("AGENT"))
        .group_by(sc.name)
    )
    shared = sorted(name for name, wfs in node_workflows.items() if len(wfs) > 1)
    rows: list[tuple[str, str, Any, Any, Any, Any]] = []
    for name, calls, cost, i, o in conn.execute(per_name):
        if name not in shared:
            (workflow,) = node_workflows.get(name) or {""}
            rows.append((workflow, name, calls, cost, i, o))
    if shared:
        ti = sel.t["trace_info"].c
        split = (
            sa.select(ti.trace_name, sc.name, sa.func.count(), cost_sum)
            .add_columns(_sum(sa, tin), _sum(sa, tout))
            .select_from(sel.t["spans"].join(sel.t["trace_info"], ti.request_id == sc.trace_id))
            .where(sc.type == sa.literal_column("'AGENT'"), sc.name.in_(shared), *sel.trace_conds)
            .group_by(ti.trace_name, sc.name)
        )
        for trace_name, name, calls, cost, i, o in conn.execute(split):
            rows.append((workflow_of(trace_name), name, calls, cost, i, o))
    for workflow, name, calls, cost, i, o in rows:
        c = groups.nodes.setdefault((workflow, name), CallGroup())
        c.calls += int(calls)
        c.usage.add(cost, i, o, int(i or 0) + int(o or 0))


def _collect_profile(
    sa: Any, conn: Any, sel: _Selection, groups: Groups, node_workflows: dict[str, set[str]]
) -> None:
    sc = sel.t["spans"].c
    ti = sel.t["trace_info"].c
    joined = sel.t["spans"].join(sel.t["trace_info"], ti.request_id == sc.trace_id)
    lists: dict[tuple[str, str], list[int]] = groups.durations
    if any(len(wfs) > 1 for wfs in node_workflows.values()):
        query = (
            sa.select(ti.trace_name, sc.name, sc.duration_ns)
            .select_from(joined)
            .where(sc.type == sa.literal_column("'AGENT'"), *sel.trace_conds)
        )
        for trace_name, name, ns in conn.execute(query).all():
            lists.setdefault((workflow_of(trace_name), name), []).append(ns or 0)
    else:
        query = (
            sa.select(sc.name, sc.duration_ns).where(*sel.spans_where("AGENT")).order_by(sc.name)
        )
        only = {name: next(iter(wfs)) for name, wfs in node_workflows.items()}
        for name, rows in itertools.groupby(conn.execute(query).all(), key=lambda r: r[0]):
            lists.setdefault((only.get(name, ""), name), []).extend(r[1] or 0 for r in rows)
    node = sel.t["spans"].alias("node")
    check = sel.t["spans"].alias("check_span")
    retries = (
        sa.select(ti.trace_name, node.c.name, sa.func.count())
        .select_from(
            check.join(
                node,
                sa.and_(
                    node.c.trace_id == check.c.trace_id,
                    node.c.span_id == check.c.parent_span_id,
                ),
            ).join(sel.t["trace_info"], ti.request_id == check.c.trace_id)
        )
        .where(
            check.c.experiment_id.in_(sel.ids),
            check.c.type == "PARSER",
            check.c.status == "ERROR",
            check.c.name == "validate_output",
            *sel.trace_conds,
        )
        .group_by(ti.trace_name, node.c.name)
    )
    for trace_name, name, count in conn.execute(retries):
        key = (workflow_of(trace_name), name)
        groups.retries[key] = groups.retries.get(key, 0) + int(count)


def recent_count(uri: str, experiment: str | None, since_ms: int) -> tuple[int, list[str]]:
    """Traces (ours) since ``since_ms``, and the names of the experiments looked at."""
    sa = sa_module()
    t = tables(sa)
    with connect(uri) as conn:
        names = table_names(conn)
        check_store(conn, uri, names)
        check_revision(conn, uri)
        ids = experiment_ids(conn, uri, t, experiment)
        e = t["experiments"].c
        found = sorted(
            row[0] for row in conn.execute(sa.select(e.name).where(e.experiment_id.in_(ids)))
        )
        if not ids:
            return 0, found
        sel = _Selection(sa, conn, t, Filters(experiment=experiment, start_ms=since_ms), ids)
        query = sa.select(sa.func.count()).select_from(t["trace_info"]).where(*sel.trace_conds)
        return int(conn.execute(query).scalar() or 0), found

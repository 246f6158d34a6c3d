"""Reports on SQL tracking stores: aggregated inside the database with SQLAlchemy Core.

Reads MLflow 3.17's own tables (``trace_info``, ``trace_tags``, ``spans``, ``experiments``)
through a plain read-only engine: SQLite files are opened with ``mode=ro``; nothing is
created. Every query is a ``GROUP BY`` whose result has one row per workflow, model, node or
period; only ``report profile`` fetches one duration per node visit, for the percentiles.

Tokens per model and per node are span attributes inside the span's JSON ``content`` (the
attribute values are themselves JSON text), read with the dialect's JSON functions.
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...exceptions import InputError, Issue, MissingExtraError
from .model import (
    BUCKET_MS,
    WORKFLOW_PREFIX,
    CallGroup,
    Filters,
    Groups,
    TraceGroup,
    workflow_of,
)

if TYPE_CHECKING:
    pass

RUN_HINT = (
    "run a workflow with tracing on (configurable-agents run WORKFLOW.yaml --trace), "
    "or point --tracking-uri at your store"
)
CHAT_USAGE = "mlflow.chat.tokenUsage"
TOKEN_KEYS = ("input_tokens", "output_tokens", "total_tokens")
NODE_TOKEN_KEYS = ("node.input_tokens", "node.output_tokens")


def _sa() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("mlflow", "mlflow", "Trace reports") from exc
    return sqlalchemy


def safe_uri(uri: str) -> str:
    """``uri`` with any password masked, for messages."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


def _tables(sa: Any) -> dict[str, Any]:
    """The columns we read, declared (MLflow 3.17's schema) rather than reflected."""
    return {
        "experiments": sa.table(
            "experiments",
            sa.column("experiment_id", sa.Integer),
            sa.column("name", sa.String),
            sa.column("lifecycle_stage", sa.String),
        ),
        "trace_info": sa.table(
            "trace_info",
            sa.column("request_id", sa.String),
            sa.column("experiment_id", sa.Integer),
            sa.column("timestamp_ms", sa.BigInteger),
            sa.column("execution_time_ms", sa.BigInteger),
            sa.column("status", sa.String),
            sa.column("trace_name", sa.String),
            sa.column("input_tokens", sa.BigInteger),
            sa.column("output_tokens", sa.BigInteger),
            sa.column("total_tokens", sa.BigInteger),
            sa.column("total_cost", sa.Float),
        ),
        "trace_tags": sa.table(
            "trace_tags",
            sa.column("key", sa.String),
            sa.column("value", sa.String),
            sa.column("request_id", sa.String),
        ),
        "spans": sa.table(
            "spans",
            sa.column("trace_id", sa.String),
            sa.column("experiment_id", sa.Integer),
            sa.column("span_id", sa.String),
            sa.column("parent_span_id", sa.String),
            sa.column("name", sa.Text),
            sa.column("type", sa.String),
            sa.column("status", sa.String),
            sa.column("duration_ns", sa.BigInteger),
            sa.column("content", sa.Text),
            sa.column("total_cost", sa.Float),
            sa.column("model_name", sa.String),
        ),
    }


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MB
    cursor.close()


@contextlib.contextmanager
def connect(uri: str) -> Iterator[Any]:
    """A read-only connection to the store at ``uri``; the engine is disposed afterwards."""
    sa = _sa()
    from ..trace.targets import sqlite_path

    if uri.split(":", 1)[0].split("+", 1)[0] == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise InputError(Issue(f"{uri} is an in-memory database: it holds no traces"))
        if not path.is_file():
            raise InputError(Issue(f"no traces in {uri} yet: {path} does not exist", hint=RUN_HINT))
        url = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

        sa.event.listen(engine, "connect", _sqlite_pragmas)

    else:
        try:
            engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
        except ImportError as exc:
            raise InputError(
                Issue(
                    f"cannot open {safe_uri(uri)}: the database driver is missing ({exc})",
                    hint='pip install "configurable-agents[postgres]" for PostgreSQL',
                )
            ) from None
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise InputError(
                Issue(
                    f"cannot open the tracking store {safe_uri(uri)}: "
                    f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}",
                    hint="is the database up, and is --tracking-uri right?",
                )
            ) from None
        try:
            yield conn
        finally:
            conn.close()
    finally:
        engine.dispose()


def _check_store(conn: Any, uri: str, t: dict[str, Any]) -> None:
    sa = _sa()
    names = set(sa.inspect(conn).get_table_names())
    if "trace_info" not in names or "spans" not in names:
        raise InputError(
            Issue(
                f"{safe_uri(uri)} is not an MLflow tracking store with traces yet "
                "(no trace_info/spans tables)",
                hint=RUN_HINT,
            )
        )


def _experiment_ids(conn: Any, uri: str, t: dict[str, Any], name: str | None) -> list[int]:
    sa = _sa()
    e = t["experiments"].c
    active = sa.select(e.experiment_id, e.name).where(
        sa.or_(e.lifecycle_stage.is_(None), e.lifecycle_stage != "deleted")
    )
    if name is None:
        return [row[0] for row in conn.execute(active)]
    ids = [row[0] for row in conn.execute(active.where(e.name == name))]
    if not ids:
        names = sorted(row[1] for row in conn.execute(active))
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise InputError(
            Issue(
                f"no experiment named {name!r} in {safe_uri(uri)}",
                hint=f"experiments there: {listed}" if names else RUN_HINT,
            )
        )
    return ids


# --------------------------------------------------------------------------- token expressions

# On SQLite these exact expressions are also the columns of the report indexes: SQLite matches
# an indexed expression by its structure and then reads the value from the index instead of
# parsing the span JSON, which is what makes token sums over 100 000s of spans fast. Keep the
# two uses identical (they are the same strings).
_SQLITE_USAGE = f"json_extract(content, '$.attributes.\"{CHAT_USAGE}\"')"
SQLITE_CHAT_TOKENS = tuple(f"json_extract({_SQLITE_USAGE}, '$.{key}')" for key in TOKEN_KEYS)
SQLITE_NODE_TOKENS = tuple(
    f"CAST(json_extract(content, '$.attributes.\"{key}\"') AS INTEGER)" for key in NODE_TOKEN_KEYS
)
REPORT_INDEXES = {
    # name: (table, columns, partial-index condition)
    "ca_report_chat_spans": (
        "spans",
        ["type", "model_name", "total_cost", *SQLITE_CHAT_TOKENS, "trace_id"],
        "type = 'CHAT_MODEL'",
    ),
    "ca_report_agent_spans": (
        "spans",
        ["type", "name", "total_cost", *SQLITE_NODE_TOKENS, "duration_ns", "trace_id"],
        "type = 'AGENT'",
    ),
}


def _token_exprs(sa: Any, dialect: str, content: Any, *, chat: bool) -> list[Any]:
    """Integer token attributes of CHAT_MODEL spans (input, output, total) or of AGENT spans
    (input, output), read from the span JSON with the dialect's JSON functions."""
    if dialect == "sqlite":
        return [sa.literal_column(e) for e in (SQLITE_CHAT_TOKENS if chat else SQLITE_NODE_TOKENS)]
    out = []
    for key in TOKEN_KEYS if chat else NODE_TOKEN_KEYS:
        attribute, inner = (CHAT_USAGE, key) if chat else (key, None)
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSON

            value = sa.cast(content, JSON)["attributes"][attribute].astext
            if inner is not None:
                value = sa.cast(value, JSON)[inner].astext
        else:  # mysql / mariadb
            value = sa.func.json_unquote(
                sa.func.json_extract(content, f'$.attributes."{attribute}"')
            )
            if inner is not None:
                value = sa.func.json_extract(value, f"$.{inner}")
        out.append(sa.cast(value, sa.BigInteger))
    return out


def ensure_report_indexes(tracking_uri: str) -> list[str]:
    """Create the indexes that make reports fast on a SQLite store; return the names created.

    ``CREATE INDEX IF NOT EXISTS`` on MLflow's ``spans`` table: partial indexes over the
    AGENT and CHAT_MODEL spans holding the node / model, cost and the token attributes, so a
    report reads them without parsing span JSON. Takes a few seconds per 100 000 traces, once;
    each later trace costs microseconds more to write. Other SQL stores need none (``[]``).
    """
    from ..trace.targets import resolve_tracking_uri, sqlite_path

    sa = _sa()
    uri = resolve_tracking_uri(tracking_uri)
    if uri.split(":", 1)[0].split("+", 1)[0] != "sqlite":
        return []
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        raise InputError(Issue(f"no traces in {uri} yet: {path} does not exist", hint=RUN_HINT))
    engine = sa.create_engine(
        "sqlite:///" + str(path), poolclass=sa.pool.NullPool, connect_args={"timeout": 60}
    )
    created = []
    try:
        with engine.begin() as conn:
            _check_store(conn, uri, _tables(sa))
            existing = _sqlite_indexes(conn)
            for name, (table, columns, where) in REPORT_INDEXES.items():
                if name in existing:
                    continue
                conn.exec_driver_sql(
                    f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)}) "
                    f"WHERE {where}"
                )
                created.append(name)
    finally:
        engine.dispose()
    return created


def _sqlite_indexes(conn: Any) -> set[str]:
    query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans'"
    return {row[0] for row in conn.exec_driver_sql(query)}


def missing_report_indexes(tracking_uri: str) -> list[str]:
    """The report indexes a SQLite store lacks (``[]`` for other databases)."""
    from ..trace.targets import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.split(":", 1)[0].split("+", 1)[0] != "sqlite":
        return []
    with connect(uri) as conn:
        existing = _sqlite_indexes(conn)
    return [name for name in REPORT_INDEXES if name not in existing]


# --------------------------------------------------------------------------- selection


class _Selection:
    """The selected traces: conditions on ``trace_info``, and whether spans need them."""

    def __init__(self, sa: Any, conn: Any, t: dict[str, Any], f: Filters, ids: list[int]):
        ti = t["trace_info"].c
        self.sa = sa
        self.t = t
        self.ids = ids
        conds: list[Any] = []
        everything = f.experiment is None and len(ids) == _count(conn, t["experiments"])
        if not everything:
            conds.append(ti.experiment_id.in_(ids))
        # only traces we wrote: checked per trace only when the store holds others too
        tags = t["trace_tags"].c
        ours = (
            sa.select(sa.func.count()).select_from(t["trace_tags"]).where(tags.key == "ca.workflow")
        )
        if conn.execute(ours).scalar() != _count(conn, t["trace_info"]):
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
    sa = _sa()
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def _sum(sa: Any, expr: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(expr), 0)


# --------------------------------------------------------------------------- queries


def collect(uri: str, filters: Filters, *, spans: bool, profile: bool, buckets: bool) -> Groups:
    sa = _sa()
    t = _tables(sa)
    groups = Groups()
    with connect(uri) as conn:
        _check_store(conn, uri, t)
        ids = _experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return groups
        sel = _Selection(sa, conn, t, filters, ids)
        _collect_traces(sa, conn, sel, groups, buckets)
        if not groups.traces:
            return groups
        if spans:
            _collect_models(sa, conn, sel, groups)
            node_workflows = _node_workflows(sa, conn, sel, groups)
            _collect_nodes(sa, conn, sel, groups, node_workflows)
            if profile:
                _collect_profile(sa, conn, sel, groups, node_workflows)
    return groups


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
            _sum(sa, ti.total_cost),
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
    tokens = _token_exprs(sa, conn.dialect.name, sc.content, chat=True)
    query = (
        sa.select(
            sc.model_name, sa.func.count(), _sum(sa, sc.total_cost), *map(_sum_of(sa), tokens)
        )
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
    tin, tout = _token_exprs(sa, conn.dialect.name, sc.content, chat=False)
    per_name = (
        sa.select(sc.name, sa.func.count(), _sum(sa, sc.total_cost), _sum(sa, tin), _sum(sa, tout))
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
            sa.select(ti.trace_name, sc.name, sa.func.count(), _sum(sa, sc.total_cost))
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
    sa = _sa()
    t = _tables(sa)
    with connect(uri) as conn:
        _check_store(conn, uri, t)
        ids = _experiment_ids(conn, uri, t, experiment)
        e = t["experiments"].c
        names = sorted(
            row[0] for row in conn.execute(sa.select(e.name).where(e.experiment_id.in_(ids)))
        )
        if not ids:
            return 0, names
        sel = _Selection(sa, conn, t, Filters(experiment=experiment, start_ms=since_ms), ids)
        query = sa.select(sa.func.count()).select_from(t["trace_info"]).where(*sel.trace_conds)
        return int(conn.execute(query).scalar() or 0), names

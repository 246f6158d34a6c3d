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
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import InputError, Issue, MissingExtraError
from .reports import (
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


@contextlib.contextmanager
def connect(uri: str) -> Iterator[Any]:
    """A read-only connection to the store at ``uri``; the engine is disposed afterwards."""
    sa = _sa()
    from .tracing import sqlite_path

    if uri.split(":", 1)[0].split("+", 1)[0] == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise InputError(Issue(f"{uri} is an in-memory database: it holds no traces"))
        if not path.is_file():
            raise InputError(Issue(f"no traces in {uri} yet: {path} does not exist", hint=RUN_HINT))
        url = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA mmap_size=4294967296")  # read pages without copying them
            cursor.close()

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


def _trace_conditions(sa: Any, t: dict[str, Any], f: Filters, ids: list[int]) -> list[Any]:
    ti = t["trace_info"].c
    tags = t["trace_tags"].c
    ours = (
        sa.select(sa.literal(1))
        .where(tags.key == "ca.workflow", tags.request_id == ti.request_id)
        .exists()
    )
    conds: list[Any] = [ti.experiment_id.in_(ids), ours]
    if f.workflow is not None:
        conds.append(ti.trace_name == WORKFLOW_PREFIX + f.workflow)
    if f.start_ms is not None:
        conds.append(ti.timestamp_ms >= f.start_ms)
    if f.end_ms is not None:
        conds.append(ti.timestamp_ms < f.end_ms)
    if f.status is not None:
        conds.append(ti.status == ("OK" if f.status == "succeeded" else "ERROR"))
    return conds


def _int_attribute(sa: Any, dialect: str, content: Any, key: str, inner: str | None) -> Any:
    """An integer span attribute from the span JSON; ``inner`` reads a key of an attribute
    whose value is itself a JSON object (as ``mlflow.chat.tokenUsage`` is)."""
    path = f'$.attributes."{key}"'
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        value = sa.cast(content, postgresql.JSON)["attributes"][key].astext
        if inner is not None:
            value = sa.cast(value, postgresql.JSON)[inner].astext
        return sa.cast(value, sa.BigInteger)
    if dialect in ("mysql", "mariadb"):
        value = sa.func.json_unquote(sa.func.json_extract(content, path))
        if inner is not None:
            value = sa.func.json_unquote(sa.func.json_extract(value, f"$.{inner}"))
        return sa.cast(value, sa.BigInteger)
    value = sa.func.json_extract(content, path)
    if inner is not None:
        value = sa.func.json_extract(value, f"$.{inner}")
    return sa.cast(value, sa.BigInteger)


def _sum(sa: Any, expr: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(expr), 0)


def collect(uri: str, filters: Filters, *, spans: bool, profile: bool, buckets: bool) -> Groups:
    sa = _sa()
    t = _tables(sa)
    groups = Groups()
    with connect(uri) as conn:
        _check_store(conn, uri, t)
        ids = _experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return groups
        conds = _trace_conditions(sa, t, filters, ids)
        _collect_traces(sa, conn, t, conds, groups, buckets)
        if spans:
            _collect_spans(sa, conn, t, conds, ids, groups)
        if profile:
            _collect_profile(sa, conn, t, conds, ids, groups)
    return groups


def _collect_traces(
    sa: Any, conn: Any, t: dict[str, Any], conds: list[Any], groups: Groups, buckets: bool
) -> None:
    ti = t["trace_info"].c
    bucket = (ti.timestamp_ms - ti.timestamp_ms % BUCKET_MS) if buckets else sa.null()
    query = (
        sa.select(
            ti.trace_name,
            bucket.label("bucket"),
            sa.func.count(),
            _sum(sa, sa.case((ti.status == "OK", 1), else_=0)),
            _sum(sa, sa.case((ti.status == "ERROR", 1), else_=0)),
            _sum(sa, ti.total_cost),
            _sum(sa, ti.input_tokens),
            _sum(sa, ti.output_tokens),
            _sum(sa, ti.total_tokens),
        )
        .where(*conds)
        .group_by(ti.trace_name, *([bucket] if buckets else []))
    )
    for name, b, runs, ok, failed, cost, tin, tout, ttotal in conn.execute(query):
        key = (workflow_of(name), int(b) if b is not None else None)
        g = groups.traces.setdefault(key, TraceGroup())
        g.runs += runs
        g.succeeded += ok
        g.failed += failed
        g.usage.add(cost, tin, tout, ttotal)


def _collect_spans(
    sa: Any, conn: Any, t: dict[str, Any], conds: list[Any], ids: list[int], groups: Groups
) -> None:
    dialect = conn.dialect.name
    ti = t["trace_info"].c
    s = t["spans"]
    sc = s.c
    joined = s.join(t["trace_info"], ti.request_id == sc.trace_id)
    chat = [_int_attribute(sa, dialect, sc.content, CHAT_USAGE, key) for key in TOKEN_KEYS]
    models = (
        sa.select(
            sc.model_name,
            sa.func.count(),
            _sum(sa, sc.total_cost),
            *(_sum(sa, expr) for expr in chat),
        )
        .select_from(joined)
        .where(sc.experiment_id.in_(ids), sc.type == "CHAT_MODEL", *conds)
        .group_by(sc.model_name)
    )
    for model, calls, cost, tin, tout, ttotal in conn.execute(models):
        c = groups.models.setdefault(model or "", CallGroup())
        c.calls += calls
        c.usage.add(cost, tin, tout, ttotal)
    node_in, node_out = (_int_attribute(sa, dialect, sc.content, k, None) for k in NODE_TOKEN_KEYS)
    nodes = (
        sa.select(
            ti.trace_name,
            sc.name,
            sa.func.count(),
            _sum(sa, sc.total_cost),
            _sum(sa, node_in),
            _sum(sa, node_out),
        )
        .select_from(joined)
        .where(sc.experiment_id.in_(ids), sc.type == "AGENT", *conds)
        .group_by(ti.trace_name, sc.name)
    )
    for name, node, calls, cost, tin, tout in conn.execute(nodes):
        c = groups.nodes.setdefault((workflow_of(name), node), CallGroup())
        c.calls += calls
        c.usage.add(cost, tin, tout, (tin or 0) + (tout or 0))


def _collect_profile(
    sa: Any, conn: Any, t: dict[str, Any], conds: list[Any], ids: list[int], groups: Groups
) -> None:
    ti = t["trace_info"].c
    s = t["spans"]
    sc = s.c
    joined = s.join(t["trace_info"], ti.request_id == sc.trace_id)
    durations = (
        sa.select(ti.trace_name, sc.name, sc.duration_ns)
        .select_from(joined)
        .where(sc.experiment_id.in_(ids), sc.type == "AGENT", *conds)
    )
    for name, node, duration in conn.execute(durations):
        groups.durations.setdefault((workflow_of(name), node), []).append(int(duration or 0))
    roots = (
        sa.select(_sum(sa, sc.duration_ns))
        .select_from(joined)
        .where(sc.experiment_id.in_(ids), sc.type == "WORKFLOW", sc.parent_span_id.is_(None))
        .where(*conds)
    )
    groups.run_ns = int(conn.execute(roots).scalar() or 0)
    parent = s.alias("node")
    check = s.alias("check")
    retries = (
        sa.select(ti.trace_name, parent.c.name, sa.func.count())
        .select_from(
            check.join(
                parent,
                sa.and_(
                    parent.c.trace_id == check.c.trace_id,
                    parent.c.span_id == check.c.parent_span_id,
                ),
            ).join(t["trace_info"], ti.request_id == check.c.trace_id)
        )
        .where(
            check.c.experiment_id.in_(ids),
            check.c.type == "PARSER",
            check.c.name == "validate_output",
            check.c.status == "ERROR",
            *conds,
        )
        .group_by(ti.trace_name, parent.c.name)
    )
    for name, node, count in conn.execute(retries):
        groups.retries[(workflow_of(name), node)] = int(count)


def recent_count(uri: str, experiment: str | None, since_ms: int) -> tuple[int, list[str]]:
    """Traces (ours) since ``since_ms`` and the experiment names in the store."""
    sa = _sa()
    t = _tables(sa)
    with connect(uri) as conn:
        _check_store(conn, uri, t)
        ids = _experiment_ids(conn, uri, t, experiment)
        e = t["experiments"].c
        names = [row[0] for row in conn.execute(sa.select(e.name).where(e.experiment_id.in_(ids)))]
        if not ids:
            return 0, names
        conds = _trace_conditions(sa, t, Filters(start_ms=since_ms), ids)
        count = conn.execute(sa.select(sa.func.count()).select_from(t["trace_info"]).where(*conds))
        return int(count.scalar() or 0), sorted(names)

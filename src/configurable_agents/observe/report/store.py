"""SQL tracking stores as reports open them: the connection, MLflow's tables, and the checks
made before any query.

* ``connect``: SQLite files read only (``mode=ro``), every engine disposed afterwards;
  ``write=True`` only for ``report index`` (indexes and the rollup).
* ``check_store``: an MLflow store with traces (``trace_info`` and ``spans`` exist).
* ``check_revision``: MLflow's schema revision (``alembic_version``) is one the report SQL was
  written for (``KNOWN_REVISIONS`` of the trace writer, the same constant: the head of the
  MLflow version ``pyproject.toml`` pins). Another revision raises ``UnknownSchema``, and the
  reports read the traces through MLflow's ``search_traces`` instead.

Nothing here ever shows a password: URLs in messages go through ``mask_url`` and database
errors through ``scrub``.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from typing import Any

from ...exceptions import InputError, Issue, MissingExtraError
from ..trace.targets import mask_url, scrub, sqlite_path, url_secrets

RUN_HINT = (
    "run a workflow with tracing on (configurable-agents run WORKFLOW.yaml --trace), "
    "or point --tracking-uri at your store"
)


class UnknownSchema(Exception):
    """The store's MLflow schema revision is not one the report SQL was written for."""

    def __init__(self, uri: str, revision: str | None) -> None:
        self.uri = mask_url(uri)
        self.revision = revision
        super().__init__(
            f"{self.uri}: MLflow schema revision {revision!r} is not one these reports were "
            f"written for ({', '.join(sorted(known_revisions()))})"
        )


def known_revisions() -> frozenset[str]:
    """The schema revisions the trace writer's bulk SQL and the report SQL were written for
    (read from the writer at call time: one constant for both)."""
    from ..trace import mlflow_sink

    return mlflow_sink.KNOWN_REVISIONS


def sa_module() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("mlflow", "mlflow", "Trace reports") from exc
    return sqlalchemy


def scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def tables(sa: Any) -> dict[str, Any]:
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
        # judge results (``report prompts``, ``report costs --recommend``)
        "assessments": sa.table(
            "assessments",
            sa.column("trace_id", sa.String),
            sa.column("span_id", sa.String),
            sa.column("name", sa.String),
            sa.column("assessment_type", sa.String),
            sa.column("source_id", sa.String),
            sa.column("valid", sa.Boolean),
            sa.column("aggregate_value", sa.Float),
            sa.column("is_numeric_value", sa.Boolean),
            sa.column("assessment_metadata", sa.Text),
        ),
        # MLflow's trace -> prompt version links (``destination_id``: "name/version")
        "entity_associations": sa.table(
            "entity_associations",
            sa.column("source_type", sa.String),
            sa.column("source_id", sa.String),
            sa.column("destination_type", sa.String),
            sa.column("destination_id", sa.String),
        ),
    }


def pico(sa: Any, dialect: str, cost: Any) -> Any:
    """``cost`` (a USD float column) in whole picodollars, as ``model.to_pico`` computes it:
    ``cost * 1e12 + 0.5`` in IEEE doubles, truncated toward zero. NULL stays NULL."""
    scaled = cost * sa.cast(sa.literal(1e12), sa.Float) + sa.cast(sa.literal(0.5), sa.Float)
    if dialect == "sqlite":
        return sa.cast(scaled, sa.BigInteger)  # CAST(REAL AS INTEGER) truncates
    if dialect in ("mysql", "mariadb"):
        return sa.cast(sa.func.truncate(scaled, 0), sa.BigInteger)
    return sa.cast(sa.func.trunc(scaled), sa.BigInteger)  # PostgreSQL rounds on a plain cast


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MB
    cursor.close()


def database_error(uri: str, exc: BaseException, doing: str = "cannot read") -> InputError:
    """A database failure as an input error whose text has no secret in it."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = scrub(text.splitlines()[0] if text else type(exc).__name__, url_secrets(uri))
    return InputError(
        Issue(
            f"{doing} the tracking store {mask_url(uri)}: {first}",
            hint="is the database up, and is --tracking-uri right?",
        )
    )


@contextlib.contextmanager
def connect(uri: str, *, write: bool = False) -> Iterator[Any]:
    """A connection to the store at ``uri`` (read only unless ``write``); the engine is
    disposed afterwards."""
    sa = sa_module()
    if scheme(uri) == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise InputError(Issue(f"{uri} is an in-memory database: it holds no traces"))
        if not path.is_file():
            raise InputError(Issue(f"no traces in {uri} yet: {path} does not exist", hint=RUN_HINT))
        # pysqlite's own transaction handling off; every connection is one explicit
        # transaction (SQLAlchemy's recipe): one snapshot for all the queries of a report, and
        # ``BEGIN IMMEDIATE`` (the write lock first) for ``report index``
        args = {"timeout": 60 if write else 10, "isolation_level": None}
        if write:
            url = "sqlite:///" + str(path)
        else:
            url = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
    else:
        # reads: one snapshot for all the queries of a report
        options = {} if write else {"isolation_level": "REPEATABLE READ"}
        try:
            engine = sa.create_engine(uri, poolclass=sa.pool.NullPool, **options)
        except ImportError as exc:
            raise InputError(
                Issue(
                    f"cannot open {mask_url(uri)}: the database driver is missing "
                    f"({scrub(str(exc), url_secrets(uri))})",
                    hint='pip install "configurable-agents[postgres]" for PostgreSQL',
                )
            ) from None
        except sa.exc.ArgumentError as exc:
            raise InputError(
                Issue(f"{mask_url(uri)} is not a database URL: {scrub(str(exc), url_secrets(uri))}")
            ) from None
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise database_error(uri, exc, "cannot open") from None
        try:
            yield conn
        except sa.exc.DBAPIError as exc:  # the database failed mid-report (dropped, locked)
            raise database_error(uri, exc) from None
        finally:
            conn.close()
    finally:
        engine.dispose()


def table_names(conn: Any) -> set[str]:
    return set(sa_module().inspect(conn).get_table_names())


def check_store(conn: Any, uri: str, names: set[str] | None = None) -> None:
    names = table_names(conn) if names is None else names
    if "trace_info" not in names or "spans" not in names:
        raise InputError(
            Issue(
                f"{mask_url(uri)} is not an MLflow tracking store with traces yet "
                "(no trace_info/spans tables)",
                hint=RUN_HINT,
            )
        )


def schema_revision(conn: Any) -> str | None:
    sa = sa_module()
    if "alembic_version" not in table_names(conn):
        return None  # not a store MLflow created
    row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def check_revision(conn: Any, uri: str) -> str:
    """The store's schema revision; ``UnknownSchema`` unless the report SQL knows it."""
    revision = schema_revision(conn)
    if revision is None or revision not in known_revisions():
        raise UnknownSchema(uri, revision)
    return revision


def experiment_ids(conn: Any, uri: str, t: dict[str, Any], name: str | None) -> list[int]:
    """The active experiments (all, or the one named ``name``: an input error if none)."""
    sa = sa_module()
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
                f"no experiment named {name!r} in {mask_url(uri)}",
                hint=f"experiments there: {listed}" if names else RUN_HINT,
            )
        )
    return ids


# --------------------------------------------------------------------------- token expressions

CHAT_USAGE = "mlflow.chat.tokenUsage"
TOKEN_KEYS = ("input_tokens", "output_tokens", "total_tokens")
NODE_TOKEN_KEYS = ("node.input_tokens", "node.output_tokens")

# On SQLite these exact expressions are also the columns of the report indexes: SQLite matches
# an indexed expression by its structure and then reads the value from the index instead of
# parsing the span JSON, which is what makes token sums over 100 000s of spans fast. Keep the
# two uses identical (they are the same strings).
_SQLITE_USAGE = f"json_extract(content, '$.attributes.\"{CHAT_USAGE}\"')"
SQLITE_CHAT_TOKENS = tuple(f"json_extract({_SQLITE_USAGE}, '$.{key}')" for key in TOKEN_KEYS)
SQLITE_NODE_TOKENS = tuple(
    f"CAST(json_extract(content, '$.attributes.\"{key}\"') AS INTEGER)" for key in NODE_TOKEN_KEYS
)
# What a node ran on (``report prompts``, ``report costs --recommend``): the JSON text of the
# AGENT span's ``node.prompt_version``, ``node.provider`` and ``node.model`` (quoted strings).
NODE_DIM_KEYS = ("node.prompt_version", "node.provider", "node.model")
SQLITE_NODE_DIMS = tuple(
    f"json_extract(content, '$.attributes.\"{key}\"')" for key in NODE_DIM_KEYS
)
# ``report quality``: the judges' feedback assessments (observe.trace.judge_spans), their node
# and pass flag read from the metadata JSON; the query repeats these verbatim (report.quality)
# (deterministic functions only: SQLite refuses LIKE in a partial index's WHERE)
JUDGE_WHERE = (
    "assessment_type = 'feedback' AND json_extract(assessment_metadata, '$.on_fail') IS NOT NULL"
)
SQLITE_JUDGE_NODE = "json_extract(assessment_metadata, '$.node')"
SQLITE_JUDGE_PASSED = "json_extract(assessment_metadata, '$.passed')"
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
    # report costs --recommend: per node and the provider and model it ran on
    "ca_report_node_models": (
        "spans",
        ["type", *SQLITE_NODE_DIMS[1:], "name", "total_cost", *SQLITE_NODE_TOKENS],
        "type = 'AGENT'",
    ),
    # report prompts: only the node spans that ran on a registry prompt version
    "ca_report_prompt_spans": (
        "spans",
        [
            "type",
            SQLITE_NODE_DIMS[0],
            "name",
            "total_cost",
            *SQLITE_NODE_TOKENS,
            "duration_ns",
            "trace_id",
        ],
        f"type = 'AGENT' AND {SQLITE_NODE_DIMS[0]} IS NOT NULL",
    ),
    # judge results (report.judged: the same three conditions, as literals)
    "ca_report_judged": (
        "assessments",
        [
            "assessment_type",
            "trace_id",
            "span_id",
            "name",
            "aggregate_value",
            "is_numeric_value",
            "valid",
            "assessment_metadata",
        ],
        "assessment_type = 'feedback' AND aggregate_value IS NOT NULL "
        "AND name NOT IN ('cost_usd', 'total_tokens')",
    ),
    # report quality (``INDEXED BY``: without statistics SQLite prefers MLflow's index on
    # assessment_type, which holds every feedback row). Covering: SQLite (before 3.41)
    # reads an indexed expression's columns from the index only when they are in it too.
    "ca_report_judges": (
        "assessments",
        [
            "experiment_id",
            "name",
            SQLITE_JUDGE_NODE,
            "trace_timestamp_ms",
            "aggregate_value",
            SQLITE_JUDGE_PASSED,
            "trace_id",
            "assessment_type",
            "assessment_metadata",
        ],
        JUDGE_WHERE,
    ),
}

# PostgreSQL: the same reads. ``report quality`` groups the judge results by their metadata
# text (report.quality.raw_metadata: no JSON parsed per row) and can read them all from this
# partial index (an index-only scan: every column it names is in it; our judges' metadata is
# a few short keys). The conditions are the ones the queries state, verbatim
# (report.quality; ``type = 'AGENT'`` in report.sql's spans_where), so the planner proves the
# partial indexes apply whatever the driver's parameter binding.
PG_JUDGE_WHERE = "assessment_type = 'feedback' AND assessment_metadata LIKE '%\"on_fail\"%'"
PG_PROMPT_VERSION = "(CAST(content AS JSON) -> 'attributes' ->> 'node.prompt_version')"
POSTGRES_REPORT_INDEXES = {
    # name: (table, key columns, INCLUDE columns, partial-index condition)
    "ca_report_judges": (
        "assessments",
        ["experiment_id", "name", "trace_timestamp_ms"],
        ["aggregate_value", "assessment_metadata", "trace_id"],
        PG_JUDGE_WHERE,
    ),
    # report prompts: only the node spans that ran on a registry prompt version (their
    # tokens are in the span JSON, which no index can hold: the rows are read)
    "ca_report_prompt_spans": (
        "spans",
        [PG_PROMPT_VERSION, "name"],
        ["trace_id"],
        f"type = 'AGENT' AND {PG_PROMPT_VERSION} IS NOT NULL",
    ),
}


def node_dim_exprs(sa: Any, dialect: str, content: Any) -> list[Any]:
    """The AGENT span's prompt version, provider and model as JSON text (``'"x"'``: strip
    the quotes after reading), with the dialect's JSON functions."""
    if dialect == "sqlite":
        return [sa.literal_column(e) for e in SQLITE_NODE_DIMS]
    out = []
    for key in NODE_DIM_KEYS:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSON

            out.append(sa.cast(content, JSON)["attributes"][key].astext)
        else:  # mysql / mariadb
            out.append(sa.func.json_unquote(sa.func.json_extract(content, f'$.attributes."{key}"')))
    return out


def json_text(value: Any) -> str | None:
    """A node dimension as read (JSON text of a string attribute) as the plain string."""
    if value is None:
        return None
    import json

    try:
        found = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return found if isinstance(found, str) else str(found)


def token_exprs(sa: Any, dialect: str, content: Any, *, chat: bool) -> list[Any]:
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

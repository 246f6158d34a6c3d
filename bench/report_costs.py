"""``report costs --breakdown`` over 100 000 traces: our SQL report vs search_traces + Python.

How the 100 000 traces are made (bulk copies of real traces, not 100 000 runs):

1. A few real workflows run with tracing on (``review_loop``, ``calculator_tools``, a node
   that needs one retry, a run that fails) and our real background writer stores them in a
   fresh SQLite store. These traces are the *templates*.
2. ``copy_traces`` clones the templates' rows in ``trace_info``, ``trace_tags``,
   ``trace_request_metadata``, ``spans``, ``assessments`` (and ``trace_metrics`` /
   ``span_metrics`` when present) with SQLAlchemy Core ``INSERT ... SELECT`` statements inside
   SQLite, one large transaction per batch: a temporary table maps each new trace id to its
   template and its new timestamp (spread uniformly over the last 60 days), and the copies get
   the new trace id (also inside tag values and the span JSON) and shifted timestamps.

Then it times, on the same store:

* **ours**: ``cost_report(uri, breakdown=True)`` (best of 3), and the CLI
  ``configurable-agents report costs --breakdown`` end to end in a subprocess;
* **theirs**: ``mlflow.search_traces(include_spans=True, return_type="list")`` then the same
  aggregation in Python. Fetching every span of 100 000 traces this way takes many minutes, so
  by default it runs on the first ``--theirs-traces`` traces (5 000) and is scaled linearly to
  the full count; both the raw and the scaled numbers are printed.

Targets: ours < 1 s, theirs / ours >= 100.

    python bench/report_costs.py [--traces 100000] [--theirs-traces 5000] [--store DIR]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DAYS = 60
TARGET_SECONDS = 1.0
TARGET_RATIO = 100.0
BATCH = 20_000  # traces per INSERT ... SELECT transaction

RETRY = """\
schema_version: "1.0"
flow: {name: retry_demo}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      score: [{value: "not a number"}, {value: 7}]
  execution: {max_retries: 1}
state:
  fields:
    topic: {type: str, required: true}
    value: {type: int, default: 0}
nodes:
  - id: score
    prompt: "Score {topic}."
    outputs: [value]
    output_schema: {fields: [{name: value, type: int}]}
edges:
  - {from: START, to: score}
  - {from: score, to: END}
"""
FAILING = RETRY.replace("{max_retries: 1}", "{max_retries: 0}")

# (workflow, inputs, share of the generated traces)
TEMPLATES: list[tuple[str, dict[str, Any], float]] = [
    ("review_loop.yaml", {"topic": "bees"}, 0.5),
    ("calculator_tools.yaml", {"question": "what is 2+2?"}, 0.3),
    ("retry.yaml", {"topic": "x"}, 0.15),
    ("failing.yaml", {"topic": "x"}, 0.05),
]

# tables copied, and the column holding the trace id in each
TRACE_TABLES = {
    "trace_info": "request_id",
    "trace_tags": "request_id",
    "trace_request_metadata": "request_id",
    "trace_metrics": "request_id",
    "spans": "trace_id",
    "span_metrics": "trace_id",
    "assessments": "trace_id",
}


def run_templates(
    uri: str, experiment: str = "bench", workdir: Path | None = None
) -> list[tuple[str, float]]:
    """Run the template workflows traced into ``uri``; return (trace id, weight) pairs."""
    import configurable_agents as ca

    workdir = workdir or Path(tempfile.mkdtemp(prefix="ca-bench-"))
    (workdir / "retry.yaml").write_text(RETRY, encoding="utf-8")
    (workdir / "failing.yaml").write_text(FAILING, encoding="utf-8")
    out = []
    for name, inputs, weight in TEMPLATES:
        path = EXAMPLES / name if (EXAMPLES / name).exists() else workdir / name
        compiled = ca.compile_workflow(ca.load_workflow(path))
        config = compiled.workflow.spec.config.observability.mlflow
        config.tracking_uri = uri
        config.experiment_name = experiment
        result = ca.run_workflow(compiled, inputs, trace=True, tags={"user": "bench"})
        out.append((str(result.trace_id), weight))
    if not ca.flush(120):
        raise RuntimeError("templates were not written in time")
    return out


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def copy_traces(
    uri: str,
    sources: Sequence[str],
    timestamps_ms: Sequence[int],
    *,
    batch: int = BATCH,
) -> list[str]:
    """Clone trace ``sources[i]`` as a new trace starting at ``timestamps_ms[i]``, in bulk.

    Returns the new trace ids. Rows are copied inside the database (``INSERT ... SELECT``
    joined to a temporary id map), one transaction per ``batch`` traces.
    """
    if len(sources) != len(timestamps_ms):
        raise ValueError("one timestamp per source trace")
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(engine, only=lambda name, _: name in TRACE_TABLES)
        # sorted ids append to the primary-key indexes instead of splitting pages all over them
        new_ids = sorted(f"tr-{uuid.uuid4().hex}" for _ in sources)
        with engine.begin() as conn:
            starts = dict(
                conn.execute(
                    sa.select(meta.tables["trace_info"].c.request_id, meta.tables["trace_info"].c.timestamp_ms)
                ).all()
            )
        for lo in range(0, len(sources), batch):
            rows = [
                {
                    "new_id": new_ids[i],
                    "tpl_id": sources[i],
                    "new_hex": new_ids[i][3:],
                    "tpl_hex": sources[i][3:],
                    "new_b64": _b64(new_ids[i][3:]),
                    "tpl_b64": _b64(sources[i][3:]),
                    "shift_ms": int(timestamps_ms[i]) - int(starts[sources[i]]),
                }
                for i in range(lo, min(lo + batch, len(sources)))
            ]
            with engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("PRAGMA synchronous=OFF")
                    conn.exec_driver_sql("PRAGMA cache_size=-500000")  # 500 MB
                _copy_batch(conn, meta, rows)
        return new_ids
    finally:
        engine.dispose()


def _copy_batch(conn: sa.Connection, meta: sa.MetaData, rows: list[dict[str, Any]]) -> None:
    gen = sa.Table(
        "_ca_bench_gen",
        sa.MetaData(),
        sa.Column("new_id", sa.String(50)),
        sa.Column("tpl_id", sa.String(50)),
        sa.Column("new_hex", sa.String(40)),
        sa.Column("tpl_hex", sa.String(40)),
        sa.Column("new_b64", sa.String(40)),
        sa.Column("tpl_b64", sa.String(40)),
        sa.Column("shift_ms", sa.BigInteger),
        prefixes=["TEMPORARY"],
    )
    gen.create(conn)
    try:
        conn.execute(gen.insert(), rows)
        g = gen.c
        ns = g.shift_ms * 1_000_000

        def renamed(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            return sa.func.replace(col, g.tpl_hex, g.new_hex)

        for name, id_col in TRACE_TABLES.items():
            table = meta.tables.get(name)
            if table is None:
                continue
            exprs: dict[str, sa.ColumnElement[Any]] = {}
            for col in table.c:
                if col.computed is not None:
                    continue  # generated (spans.duration_ns)
                exprs[col.name] = col
            exprs[id_col] = g.new_id
            c = table.c
            if name == "trace_info":
                exprs["timestamp_ms"] = c.timestamp_ms + g.shift_ms
                exprs["client_request_id"] = renamed(c.client_request_id)
            elif name in ("trace_tags", "trace_request_metadata"):
                exprs["value"] = renamed(c.value)
            elif name == "spans":
                exprs["start_time_unix_nano"] = c.start_time_unix_nano + ns
                exprs["end_time_unix_nano"] = c.end_time_unix_nano + ns
                content = sa.func.replace(renamed(c.content), g.tpl_b64, g.new_b64)
                for key, col in (
                    ("start_time_unix_nano", c.start_time_unix_nano),
                    ("end_time_unix_nano", c.end_time_unix_nano),
                ):
                    old = sa.literal(f'"{key}": ') + sa.cast(col, sa.String)
                    new = sa.literal(f'"{key}": ') + sa.cast(col + ns, sa.String)
                    content = sa.func.replace(content, old, new)
                exprs["content"] = content
            elif name == "assessments":
                exprs["assessment_id"] = sa.type_coerce(
                    sa.func.substr(c.assessment_id, 1, 18), sa.String
                ) + sa.func.substr(g.new_hex, 1, 16)
                exprs["created_timestamp"] = c.created_timestamp + g.shift_ms
                exprs["last_updated_timestamp"] = c.last_updated_timestamp + g.shift_ms
                if "trace_timestamp_ms" in c:
                    exprs["trace_timestamp_ms"] = c.trace_timestamp_ms + g.shift_ms
            select = sa.select(*exprs.values()).select_from(
                table.join(gen, table.c[id_col] == g.tpl_id)
            )
            conn.execute(table.insert().from_select(list(exprs), select))
    finally:
        gen.drop(conn)

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
  by default it runs on the newest ``--theirs-traces`` traces (2 000) and is scaled linearly to
  the full count; both the raw and the scaled numbers are printed.

Targets: ours < 1 s, theirs / ours >= 100.

    python bench/report_costs.py [--traces 100000] [--theirs-traces 2000] [--store DIR]
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
            ti = meta.tables["trace_info"].c
            starts = dict(conn.execute(sa.select(ti.request_id, ti.timestamp_ms)).all())
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


def generate(uri: str, traces: int, *, workdir: Path, days: int = DAYS, seed: int = 0) -> list[str]:
    """Templates plus ``traces`` bulk copies spread over the last ``days`` days."""
    templates = run_templates(uri, workdir=workdir)
    rng = random.Random(seed)
    ids = [trace_id for trace_id, _ in templates]
    weights = [weight for _, weight in templates]
    now = int(time.time() * 1000)
    sources = rng.choices(ids, weights, k=traces)
    stamps = [now - rng.randrange(days * 86_400_000) for _ in range(traces)]
    return copy_traces(uri, sources, stamps)


def best_of(n: int, fn: Any) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


CLI = """
import sys, typer
from configurable_agents.cli.app import app
if not any(g.name == "report" for g in app.registered_groups):
    from configurable_agents.cli.report import observability_app, report_app
    app.add_typer(report_app, name="report")
    app.add_typer(observability_app, name="observability")
from configurable_agents.cli.app import main
main(sys.argv[1:])
"""


def time_cli(uri: str, reps: int = 3) -> float:
    """``configurable-agents report costs --breakdown`` in a fresh interpreter, best of ``reps``
    (registers the report sub-apps when the installed CLI does not have them yet)."""
    cmd = [sys.executable, "-c", CLI, "report", "costs", "--breakdown", "--tracking-uri", uri]
    env = {**os.environ, "COLUMNS": "120"}
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or "Cost by Node" not in proc.stdout:
            raise RuntimeError(f"CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
        best = min(best, elapsed)
    return best


def theirs(uri: str, start_ms: int | None) -> Any:
    """The approach without our SQL: fetch every trace with its spans through
    ``mlflow.search_traces`` and aggregate in Python (the same aggregation code as the REST
    path of ``report costs``)."""
    import mlflow

    from configurable_agents.observe.report.model import Filters, Groups, build_cost_report
    from configurable_agents.observe.report.rest import add_traces

    mlflow.set_tracking_uri(uri)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    traces = mlflow.search_traces(
        locations=experiments,
        filter_string=f"trace.timestamp_ms >= {start_ms}" if start_ms is not None else None,
        include_spans=True,
        return_type="list",
    )
    groups = add_traces(Groups(), traces, True, False, False)
    filters = Filters(start_ms=start_ms)
    return len(traces), build_cost_report(groups, uri, filters, breakdown=True, aggregate_by=None)


def nth_newest_timestamp(uri: str, n: int) -> int:
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT timestamp_ms FROM trace_info ORDER BY timestamp_ms DESC LIMIT 1 OFFSET ?",
                (n - 1,),
            ).first()
        return int(row[0]) if row else 0
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=100_000, help="traces to generate")
    parser.add_argument(
        "--theirs-traces",
        type=int,
        default=2_000,
        help="traces the search_traces approach fetches (scaled linearly to --traces)",
    )
    parser.add_argument("--store", type=Path, help="directory for the store (kept afterwards)")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    work = args.store or Path(tempfile.mkdtemp(prefix="ca-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CONFIGURABLE_AGENTS_STATE_DIR", str(work / "state"))
    os.chdir(work)
    db = work / "mlflow.db"
    for leftover in work.glob("mlflow.db*"):
        leftover.unlink()
    shutil.rmtree(work / "mlruns", ignore_errors=True)
    uri = f"sqlite:///{db}"

    from configurable_agents.observe.report.reports import cost_report, ensure_report_indexes

    print(f"store: {uri}")
    start = time.perf_counter()
    generate(uri, args.traces, workdir=work)
    generated = time.perf_counter() - start
    total = args.traces + len(TEMPLATES)
    size = db.stat().st_size / 1e9
    print(f"generated {total:,} traces in {generated:.1f} s ({size:.2f} GB)")

    start = time.perf_counter()
    plain = cost_report(uri, breakdown=True)
    no_index = time.perf_counter() - start
    print(f"report costs --breakdown before the report indexes exist: {no_index:.2f} s")
    start = time.perf_counter()
    created = ensure_report_indexes(uri)
    print(f"report indexes {', '.join(created)} created in {time.perf_counter() - start:.1f} s")

    ours, report = best_of(3, lambda: cost_report(uri, breakdown=True))
    assert report.runs == total, (report.runs, total)
    assert report.to_dict() == plain.to_dict(), "the indexes changed the result"
    cli = time_cli(uri)

    subset = min(args.theirs_traces, total)
    since = nth_newest_timestamp(uri, subset)
    start = time.perf_counter()
    fetched, their_report = theirs(uri, since)
    their_subset = time.perf_counter() - start
    ours_subset = cost_report(uri, breakdown=True, start=since)
    same = their_report.to_dict() == ours_subset.to_dict()
    their_full = their_subset * total / fetched

    ratio = their_full / ours
    ok_time, ok_ratio = ours < TARGET_SECONDS, ratio >= TARGET_RATIO
    print()
    print(f"{'traces':<48}{total:>12,}")
    print(f"{'ours: cost_report(breakdown=True), best of 3':<48}{ours:>11.3f}s")
    print(f"{'ours: CLI report costs --breakdown, end to end':<48}{cli:>11.3f}s")
    print(
        f"{'theirs: search_traces + Python, measured':<48}{their_subset:>11.3f}s  "
        f"({fetched:,} traces)"
    )
    print(f"{'theirs: scaled linearly to all traces':<48}{their_full:>11.3f}s  (estimate)")
    print(f"{'ratio theirs / ours':<48}{ratio:>11.0f}x")
    print(f"{'same numbers on the measured subset':<48}{'yes' if same else 'NO':>12}")
    print()
    print(f"ours < {TARGET_SECONDS:.0f} s: {'PASS' if ok_time else 'FAIL'} ({ours:.3f} s)")
    print(f"ratio >= {TARGET_RATIO:.0f}x: {'PASS' if ok_ratio else 'FAIL'} ({ratio:.0f}x)")
    if args.store is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok_time and ok_ratio and same else 1


if __name__ == "__main__":
    sys.exit(main())

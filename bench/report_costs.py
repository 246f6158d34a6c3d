"""``report costs --breakdown`` over 1 000 000 traces: the rollup vs the span tables vs
``search_traces``.

How the store is made (bulk copies of real traces, not a million runs), then cached:

1. A few real workflows run with tracing on (``review_loop``, ``calculator_tools``, a node
   that needs one retry, a run that fails) and our real background writer stores them in a
   fresh SQLite store (and maintains the rollup for them). These traces are the *templates*.
2. ``copy_traces`` clones the templates' rows with SQLAlchemy Core ``INSERT ... SELECT``
   statements inside SQLite (100 000 traces per transaction, journal off): a temporary table
   maps each new trace id to its template and its new timestamp, and the copies get the new
   trace id (also inside tag values and the span JSON) and shifted timestamps.

   * the newest ``--theirs-traces`` copies (start times in the last two hours, from a
     15-minute boundary on) are **full** copies: every row of ``trace_info``, ``trace_tags``,
     ``trace_request_metadata``, ``spans``, ``assessments``;
   * the other copies (start times spread over the 60 days before) are **lean**: the same
     ``trace_info`` rows, the ``ca.workflow`` tag, and only the spans reports read (AGENT,
     CHAT_MODEL, PARSER), with the template's span JSON minus inputs/outputs (ids and times
     inside that JSON stay the template's; the columns are the copy's); no other tags,
     metadata or assessments. Nothing any report reads is left out, and it keeps the build
     of 1 000 000 traces to minutes and ~8 GB instead of ~19 GB.
3. ``report index`` (``ensure_report_indexes(rollup_mode="stale")``): the span indexes and the
   rollup backfill of the copies (which bypassed the writer), timed.

The store is kept in ``--cache`` (default ``$TMPDIR/ca-report-bench``) and reused by later runs
with the same ``--traces`` / ``--theirs-traces`` (``--fresh`` rebuilds it).

Then, in one run, on the same store:

* **rollup**: ``cost_report(uri, breakdown=True)`` (best of 3; answered from the rollup), and
  the CLI ``configurable-agents report costs --breakdown`` end to end in a fresh interpreter
  (best of 3);
* **spans**: the same report from the span tables (``backend="spans"``: what ``report costs``
  does when the rollup does not cover the store), best of 2; the reports must be identical;
* **search_traces**: ``mlflow.search_traces(include_spans=True, return_type="list")`` plus the
  same aggregation in Python (the REST path's code) over the full-copy sample, **scaled
  linearly** to all traces (an estimate: fetching a million traces with their spans this way
  would take hours); the report over the sample must equal ours over the same time range.

Target: the rollup's ``report costs --breakdown`` < 1 s.

    python bench/report_costs.py [--traces 1000000] [--theirs-traces 2000] [--cache DIR] [--fresh]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DAYS = 60
TARGET_SECONDS = 1.0
BATCH = 20_000  # traces per INSERT ... SELECT transaction
LEAN_BATCH = 100_000
STORE_FORMAT = 1  # of the cached store; bump when the generator changes

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


LEAN_SPANS = ("AGENT", "CHAT_MODEL", "PARSER")  # the spans reports read
LEAN_TABLES = ("trace_info", "trace_tags", "spans")


def _reflect(engine: sa.Engine) -> sa.MetaData:
    meta = sa.MetaData()
    with warnings.catch_warnings():  # the report indexes are on expressions
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        meta.reflect(engine, only=lambda name, _: name in TRACE_TABLES)
    return meta


def copy_traces(
    uri: str,
    sources: Sequence[str],
    timestamps_ms: Sequence[int],
    *,
    batch: int = BATCH,
    lean: bool = False,
    unsafe: bool = False,
) -> list[str]:
    """Clone trace ``sources[i]`` as a new trace starting at ``timestamps_ms[i]``, in bulk.

    Returns the new trace ids. Rows are copied inside the database (``INSERT ... SELECT``
    joined to a temporary id map), one transaction per ``batch`` traces. ``lean``: only the
    rows reports read (see the module doc). The copies bypass the writer: the rollup does not
    cover them until ``report index``. ``unsafe``: no rollback journal (a store being built).
    """
    if len(sources) != len(timestamps_ms):
        raise ValueError("one timestamp per source trace")
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        meta = _reflect(engine)
        # increasing ids (after every random one, in call order) append to the primary-key
        # indexes instead of splitting pages all over them
        run = time.time_ns() // 1000
        new_ids = [f"tr-ffff{run:014x}{i:014x}" for i in range(len(sources))]
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
                    if unsafe:
                        conn.exec_driver_sql("PRAGMA journal_mode=OFF")
                    conn.exec_driver_sql("PRAGMA synchronous=OFF")
                    conn.exec_driver_sql("PRAGMA cache_size=-500000")  # 500 MB
                _copy_batch(conn, meta, rows, lean)
        return new_ids
    finally:
        engine.dispose()


def _copy_batch(
    conn: sa.Connection, meta: sa.MetaData, rows: list[dict[str, Any]], lean: bool = False
) -> None:
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
    lean_spans = None
    try:
        conn.execute(gen.insert(), rows)
        g = gen.c
        ns = g.shift_ms * 1_000_000
        if lean:  # the templates' lean spans, once, rather than slimming every copy
            spans = meta.tables["spans"]
            lean_spans = sa.Table(
                "_ca_bench_lean_spans",
                sa.MetaData(),
                *(sa.Column(c.name, c.type) for c in spans.c if c.computed is None),
                prefixes=["TEMPORARY"],
            )
            lean_spans.create(conn)
            slim = sa.func.json_remove(
                spans.c.content,
                '$.attributes."mlflow.spanInputs"',
                '$.attributes."mlflow.spanOutputs"',
            )
            columns = [slim if c.name == "content" else spans.c[c.name] for c in lean_spans.c]
            templates = sa.select(g.tpl_id).distinct()
            conn.execute(
                lean_spans.insert().from_select(
                    [c.name for c in lean_spans.c],
                    sa.select(*columns).where(
                        spans.c.trace_id.in_(templates), spans.c.type.in_(LEAN_SPANS)
                    ),
                )
            )

        def renamed(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            return sa.func.replace(col, g.tpl_hex, g.new_hex)

        for name, id_col in TRACE_TABLES.items():
            table = meta.tables.get(name)
            if table is None or (lean and name not in LEAN_TABLES):
                continue
            exprs: dict[str, sa.ColumnElement[Any]] = {}
            for col in table.c:
                if col.computed is not None:
                    continue  # generated (spans.duration_ns)
                exprs[col.name] = col
            exprs[id_col] = g.new_id
            c = table.c
            where: list[sa.ColumnElement[bool]] = []
            if name == "trace_info":
                exprs["timestamp_ms"] = c.timestamp_ms + g.shift_ms
                exprs["client_request_id"] = renamed(c.client_request_id)
            elif name in ("trace_tags", "trace_request_metadata"):
                exprs["value"] = renamed(c.value)
                if lean:  # the tag reports read
                    where.append(c.key == "ca.workflow")
            elif name == "spans":
                if lean_spans is not None:
                    table, c = lean_spans, lean_spans.c
                    exprs = {col.name: col for col in c}
                    exprs[id_col] = g.new_id
                exprs["start_time_unix_nano"] = c.start_time_unix_nano + ns
                exprs["end_time_unix_nano"] = c.end_time_unix_nano + ns
                if not lean:  # lean copies keep the template's (slimmed) span JSON as is
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
                ) + sa.func.substr(g.new_hex, 17, 16)  # the part that differs
                exprs["created_timestamp"] = c.created_timestamp + g.shift_ms
                exprs["last_updated_timestamp"] = c.last_updated_timestamp + g.shift_ms
                if "trace_timestamp_ms" in c:
                    exprs["trace_timestamp_ms"] = c.trace_timestamp_ms + g.shift_ms
            select = (
                sa.select(*exprs.values())
                .select_from(table.join(gen, table.c[id_col] == g.tpl_id))
                .where(*where)
            )
            conn.execute(meta.tables[name].insert().from_select(list(exprs), select))
    finally:
        gen.drop(conn)
        if lean_spans is not None:
            lean_spans.drop(conn)


def build_store(db: Path, traces: int, sample: int, *, days: int = DAYS, seed: int = 0) -> int:
    """A fresh store at ``db``: templates, ``sample`` full copies in the last two hours (from a
    15-minute boundary on), the rest lean over the ``days`` before. Returns the sample's
    start (ms), the boundary a report over the sample uses."""
    from configurable_agents.observe.report.model import BUCKET_MS
    from configurable_agents.observe.report.store import REPORT_INDEXES

    uri = f"sqlite:///{db}"
    clock = time.perf_counter()
    templates = run_templates(uri, workdir=db.parent)
    print(f"  templates traced by the writer: {time.perf_counter() - clock:.1f} s")
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:  # rebuilt by `report index` afterwards, faster than kept up
        for name in REPORT_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    # out of WAL for the bulk copy (no journal at all): needs the writer's detached drainer
    # to have exited (it does a few seconds after the templates are written)
    deadline = time.monotonic() + 120
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
            break
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    engine.dispose()
    rng = random.Random(seed)
    ids = [trace_id for trace_id, _ in templates]
    weights = [weight for _, weight in templates]
    now = int(time.time() * 1000)
    window = now - 2 * 3_600_000
    window -= window % BUCKET_MS
    sample = min(sample, traces)
    full = rng.choices(ids, weights, k=sample)
    clock = time.perf_counter()
    # start times in the order of the (sorted) new ids: every index of the copies appends
    copy_traces(uri, full, sorted(rng.randrange(window, now) for _ in full), unsafe=True)
    print(f"  {sample:,} full copies: {time.perf_counter() - clock:.1f} s")
    clock = time.perf_counter()
    lean = rng.choices(ids, weights, k=traces - sample)
    stamps = sorted(window - 1 - rng.randrange(days * 86_400_000) for _ in lean)
    copy_traces(uri, lean, stamps, lean=True, batch=LEAN_BATCH, unsafe=True)
    print(f"  {len(lean):,} lean copies: {time.perf_counter() - clock:.1f} s")
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    engine.dispose()
    return window


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


def cached_store(cache: Path, traces: int, sample: int, fresh: bool) -> tuple[Path, int, bool]:
    """The store for these parameters, built unless a complete one is cached. Returns its path,
    the sample's start (ms) and whether it was built now."""
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"store-{traces}-{sample}-v{STORE_FORMAT}.db"
    marker = db.with_suffix(".json")
    if not fresh and db.exists() and marker.exists():
        return db, int(json.loads(marker.read_text(encoding="utf-8"))["sample_start_ms"]), False
    for leftover in cache.glob(db.name + "*"):
        leftover.unlink()
    marker.unlink(missing_ok=True)
    shutil.rmtree(cache / "mlruns", ignore_errors=True)
    window = build_store(db, traces, sample)
    marker.write_text(json.dumps({"sample_start_ms": window}), encoding="utf-8")
    return db, window, True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=1_000_000, help="bulk copies to generate")
    parser.add_argument(
        "--theirs-traces",
        type=int,
        default=2_000,
        help="full copies search_traces fetches (scaled linearly to all traces)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ca-report-bench",
        help="where the store is kept between runs",
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached store")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("CONFIGURABLE_AGENTS_STATE_DIR", str(args.cache / "state"))
    args.cache.mkdir(parents=True, exist_ok=True)
    os.chdir(args.cache)

    from configurable_agents.observe.report.reports import cost_report, ensure_report_indexes

    start = time.perf_counter()
    db, window, built = cached_store(args.cache, args.traces, args.theirs_traces, args.fresh)
    uri = f"sqlite:///{db}"
    if built:
        print(f"built {uri} in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        done = ensure_report_indexes(uri, rollup_mode="stale")
        print(f"report index ({', '.join(done)}): {time.perf_counter() - start:.1f} s")
    else:
        print(f"cached store: {uri}")
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e9

    ours, report = best_of(3, lambda: cost_report(uri, breakdown=True))
    assert report.source == "rollup", report.source
    total = report.runs
    cli = time_cli(uri)
    spans, span_report = best_of(2, lambda: cost_report(uri, breakdown=True, backend="spans"))
    same_spans = span_report.to_dict() == report.to_dict()

    start = time.perf_counter()
    fetched, their_report = theirs(uri, window)
    their_sample = time.perf_counter() - start
    ours_sample = cost_report(uri, breakdown=True, start=window)
    assert ours_sample.source == "rollup", ours_sample.source
    same_sample = their_report.to_dict() == ours_sample.to_dict()
    their_full = their_sample * total / fetched

    ok = ours < TARGET_SECONDS
    print()
    print(f"{total:,} traces ({size:.1f} GB); report costs --breakdown")
    print(f"{'':<52}{'seconds':>10}{'x rollup':>10}")
    rows = [
        ("rollup: cost_report, in-process, best of 3", ours),
        ("rollup: CLI end to end (fresh interpreter), best of 3", cli),
        ("span tables: cost_report(backend='spans'), best of 2", spans),
        (f"search_traces + Python: {fetched:,} traces measured", their_sample),
        (f"search_traces + Python: scaled to {total:,} (estimate)", their_full),
    ]
    for label, seconds in rows:
        print(f"{label:<52}{seconds:>10.3f}{seconds / ours:>9.0f}x")
    for label, same in (
        ("same numbers: rollup vs span tables", same_spans),
        ("same numbers: rollup vs search_traces (sample)", same_sample),
    ):
        print(f"{label:<52}{'yes' if same else 'NO':>10}")
    print()
    print(f"rollup < {TARGET_SECONDS:.0f} s in-process: {'PASS' if ok else 'FAIL'} ({ours:.3f} s)")
    print(f"CLI end to end < {TARGET_SECONDS:.0f} s: {'yes' if cli < TARGET_SECONDS else 'no'}")
    return 0 if ok and same_spans and same_sample else 1


if __name__ == "__main__":
    sys.exit(main())

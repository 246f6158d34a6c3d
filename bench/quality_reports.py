"""``report quality`` over 100 000 judged traces (SQLite), timed.

How the store is made: one real judged workflow (an LLM judge with on_fail: retry on a node,
an MLflow built-in scorer, a code-free final-output judge; test provider) runs with tracing on
and our writer stores its trace. Its ``trace_info`` row, ``ca.workflow`` tag and assessment
rows (the judges' and the writer's own ``cost_usd`` / ``total_tokens`` feedback, as a real
store holds them) are then cloned ``--traces`` times inside SQLite (``INSERT ... SELECT`` over
a recursive counter, one transaction): each clone gets its own trace id, a start time spread
over the 30 days before, and scores drawn from the clone's number (so pass rates and means
differ per day and judge). No ``ANALYZE``: a store the writer made has no statistics, and
the query must not depend on them. ``report index`` creates ``ca_report_judges``; then
``quality_report`` is timed (best of 3) and the CLI end to end once. Target: < 1 s.

    python bench/quality_reports.py [--traces 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0
DAY_MS = 86_400_000

WORKFLOW = """\
schema_version: "1.0"
flow: {name: judged_bench}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "a draft"}, {article: "a better draft"}]
      on_topic: [{score: 2, rationale: "drifts"}, {score: 5, rationale: "on topic"}]
      safe: [{score: true, rationale: "harmless"}]
      overall: [{score: 4, rationale: "good"}]
  observability:
    mlflow: {enabled: true, tracking_uri: URI, experiment_name: bench}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - {id: write, prompt: "Write about {topic}.", outputs: [article]}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
judges:
  - {name: on_topic, node: write, instructions: "Rate {{ outputs }} on {{ inputs }}.",
     threshold: 4, on_fail: retry}
  - {name: safe, node: write, scorer: "mlflow:Safety", on_fail: block}
  - {name: overall, instructions: "Rate {{ outputs }}.", threshold: 3}
"""


def template_store(db: Path) -> str:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["CONFIGURABLE_AGENTS_SPOOL"] = str(db.parent / "spool.db")  # the bench's own
    import configurable_agents as ca

    path = db.parent / "judged_bench.yaml"
    path.write_text(WORKFLOW.replace("URI", json.dumps(f"sqlite:///{db}")))
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(120) and result.trace_written, result.trace_error
    return f"tr-{result.run_id}"


def clone(db: Path, template: str, traces: int) -> None:
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db, isolation_level=None, timeout=120)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute(
        f"""CREATE TEMP TABLE ids AS WITH RECURSIVE n(i) AS
        (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {traces})
        SELECT i, printf('tr-%032x', i) AS id,
               {now} - (i % 30) * {DAY_MS} - (i * 7919) % {DAY_MS} AS ts FROM n"""
    )
    conn.execute(
        """INSERT INTO trace_info (request_id, experiment_id, timestamp_ms, execution_time_ms,
               status, client_request_id, request_preview, response_preview, trace_name)
           SELECT ids.id, t.experiment_id, ids.ts, t.execution_time_ms, t.status, ids.id,
               t.request_preview, t.response_preview, t.trace_name
           FROM ids, trace_info t WHERE t.request_id = ?""",
        (template,),
    )
    conn.execute(
        """INSERT INTO trace_tags (key, value, request_id)
           SELECT 'ca.workflow', 'judged_bench', ids.id FROM ids"""
    )
    columns = [r[1] for r in conn.execute("PRAGMA table_info(assessments)")]
    varied = {
        "assessment_id": "printf('a-%s-%s', ids.i, a.name)",
        "trace_id": "ids.id",
        "trace_timestamp_ms": "ids.ts",
        # a score per clone: numeric judges 1..5 by the clone's number, bool ones mostly true
        "aggregate_value": "CASE WHEN a.is_numeric_value THEN 1 + (ids.i * 31 + ids.i / 977) % 5 "
        "ELSE (ids.i % 10 != 0) END",
        "value": "CASE WHEN a.is_numeric_value THEN printf('%.1f', 1 + (ids.i * 31 + ids.i / 977)"
        " % 5) ELSE CASE WHEN ids.i % 10 != 0 THEN 'true' ELSE 'false' END END",
        "assessment_metadata": "json_set(a.assessment_metadata, '$.passed', CASE WHEN "
        "a.is_numeric_value THEN CASE WHEN 1 + (ids.i * 31 + ids.i / 977) % 5 >= "
        "CAST(json_extract(a.assessment_metadata, '$.threshold') AS REAL) THEN 'true' ELSE "
        "'false' END ELSE CASE WHEN ids.i % 10 != 0 THEN 'true' ELSE 'false' END END)",
    }
    select = ", ".join(varied.get(c, f"a.{c}") for c in columns)
    conn.execute(
        f"""INSERT INTO assessments ({", ".join(columns)})
            SELECT {select} FROM ids, assessments a WHERE a.trace_id = ?""",
        (template,),
    )
    conn.execute("COMMIT")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ca-quality-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    if db.exists():
        db.unlink()
    uri = f"sqlite:///{db}"
    template = template_store(db)
    start = time.perf_counter()
    clone(db, template, args.traces)
    print(f"cloned {args.traces:,} judged traces in {time.perf_counter() - start:.1f} s")
    from configurable_agents.observe.report.quality import quality_report
    from configurable_agents.observe.report.sql import ensure_report_indexes

    start = time.perf_counter()
    made = ensure_report_indexes(uri, rollup_mode="stale")
    print(f"report index: {made} in {time.perf_counter() - start:.1f} s")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        report = quality_report(uri)
        times.append(time.perf_counter() - start)
    runs = {(r.judge, r.node): r.runs for r in report.rows}
    print(f"judges: {runs}")
    for row in report.rows:
        print(
            f"  {row.judge:9} {row.node or '(outputs)':10} pass {row.pass_rate:.1%} "
            f"mean {row.mean:.2f} p10 {row.p10:g} days {len(row.by_day)}"
        )
    best = min(times)
    print(f"quality_report over {args.traces + 1:,} judged traces: best of 3 {best * 1000:.0f} ms")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "configurable_agents", "report", "quality", "--tracking-uri", uri],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    print(f"CLI report quality end to end (fresh interpreter): {time.perf_counter() - start:.2f} s")
    print(f"target < {TARGET_SECONDS:g} s: {'met' if best < TARGET_SECONDS else 'NOT met'}")
    return 0 if best < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

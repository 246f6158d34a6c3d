"""What a ``warn`` judge adds to the caller's path (issue 10 target: <= 1 ms per run).

The same one-node workflow on the zero-latency ``test`` provider, without judges and with one
LLM ``warn`` judge (which runs after the run, in the background), compiled once each and run in
alternating blocks; printed: the median wall time of ``run_workflow`` for each and the
difference. Tracing off; ``flush`` between runs so the judges of one run never overlap the next.

    python bench/warn_judge.py [--runs 400] [--block 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import configurable_agents as ca

TARGET_MS = 1.0
WORKFLOW = """\
schema_version: "1.0"
flow: {name: warn_judge_bench}
config:
  llm:
    provider: test
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""
JUDGE = """\
judges:
  - name: on_topic
    node: write
    instructions: "Rate from 1 to 5 how well {{ outputs }} stays on the topic {{ topic }}."
    scale: [1, 5]
    threshold: 3
    on_fail: warn
    llm:
      responses:
        on_topic: [{score: 4, rationale: "stays on the topic"}]
"""


def timed(compiled: object, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        ca.run_workflow(compiled, {"topic": "tides"})
        times.append(time.perf_counter() - start)
        ca.flush(60)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--block", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        plain_path, judged_path = Path(tmp, "plain.yaml"), Path(tmp, "judged.yaml")
        plain_path.write_text(WORKFLOW)
        judged_path.write_text(WORKFLOW + JUDGE)
        plain = ca.compile_workflow(ca.load_workflow(plain_path))
        judged = ca.compile_workflow(ca.load_workflow(judged_path))
        timed(plain, 20), timed(judged, 20)  # warm up (the judged side loads MLflow's judges)
        a: list[float] = []
        b: list[float] = []
        for _ in range(max(1, args.runs // args.block)):
            a += timed(plain, args.block)
            b += timed(judged, args.block)
    plain_ms, judged_ms = statistics.median(a) * 1000, statistics.median(b) * 1000
    added = judged_ms - plain_ms
    print(f"run_workflow median over {len(a)} runs each, alternating blocks of {args.block}:")
    print(f"   no judges        {plain_ms:.3f} ms")
    print(f"   one warn judge   {judged_ms:.3f} ms")
    verdict = "PASS" if added <= TARGET_MS else "FAIL"
    print(f"   added {added:+.3f} ms per run (target <= {TARGET_MS:g} ms): {verdict}")
    return 0 if added <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())

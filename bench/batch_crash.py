"""Issue 11's "done when", from the command line: a big batch killed with SIGKILL, then resumed.

Two batches, each run as a user runs it (``configurable-agents batch`` in a subprocess, tracing
on into a SQLite MLflow store):

1. **The local model**: ``--local-rows`` rows (default 1,000) of a one-node headline workflow
   on the bundled SmolLM2 (``provider: local``, ``-c 2``: two processes that each load the model
   once).
2. **The test provider**: ``--test-rows`` rows (default 100,000) of ``bench/two_node.yaml``
   (``-c 16``).

Each batch gets SIGKILL once ``--kill-at`` of its rows (a fraction) are in the results file,
then runs again with ``--resume`` to the end, then ``observability flush`` writes what the
spool still holds. Checked: every row in the results file exactly once (none lost, none run
twice), every succeeded row's ``trace_id`` in the store exactly once, and the resumed process's
RSS (``VmRSS`` of the CLI, sampled every 0.5 s) after its first 2,000 rows against its peak
(target: growth <= 50 MB).

    python bench/batch_crash.py [--local-rows 1000] [--test-rows 100000] [--kill-at 0.3]
                                [--skip-local] [--skip-test] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "configurable_agents"]
RSS_TARGET_MB = 50.0

HEADLINES = """\
schema_version: "1.0"
flow: {name: batch_headlines, description: "One headline per topic on the local model."}
config:
  llm: {provider: local, temperature: 0.2, max_tokens: 32, seed: 7}
  execution: {timeout_seconds: 120, max_retries: 2}
  observability:
    mlflow: {enabled: true, tracking_uri: "STORE"}
state:
  fields:
    topic: {type: str, required: true}
    headline: {type: str, default: "", max_length: 80}
nodes:
  - id: headline
    prompt: "Write a short, catchy headline for a news story about {topic}."
    outputs: [headline]
    output_schema:
      fields: [{name: headline, type: str, description: "the headline, one line"}]
edges:
  - {from: START, to: headline}
  - {from: headline, to: END}
"""

SUBJECTS = [
    "bees",
    "tides",
    "volcanoes",
    "libraries",
    "trains",
    "coffee",
    "glaciers",
    "owls",
    "bridges",
    "tea",
    "comets",
    "forests",
    "bicycles",
    "chess",
    "deserts",
    "whales",
    "gardens",
    "kites",
    "lighthouses",
    "mushrooms",
    "rivers",
    "solar power",
    "clocks",
    "maps",
    "salt",
    "bread",
    "penguins",
    "castles",
    "rain",
    "wool",
    "ferries",
    "caves",
    "honey",
    "sailing",
    "snow",
    "ants",
    "museums",
    "violins",
    "wind farms",
    "markets",
]
ANGLES = [
    "in winter",
    "in cities",
    "for children",
    "in history",
    "at night",
    "in the future",
    "on islands",
    "in spring",
    "for beginners",
    "after a storm",
    "in the mountains",
    "by the sea",
    "in old photographs",
    "in small towns",
    "around the world",
    "in summer",
    "at school",
    "in science",
    "on a budget",
    "for families",
    "in the news",
    "up close",
    "from above",
    "in autumn",
    "in art",
]


def topics(n: int) -> list[str]:
    combos = [f"{s} {a}" for a in ANGLES for s in SUBJECTS]
    return [
        combos[i % len(combos)] + ("" if i < len(combos) else f" #{i // len(combos)}")
        for i in range(n)
    ]


def write_rows(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for topic in topics(n):
            f.write(json.dumps({"topic": topic}) + "\n")


def results(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):  # a torn last line: --resume repairs it
            out.append(json.loads(line))
    return out


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def lines_in(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def run_killed(cmd: list[str], out: Path, kill_after: int, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and lines_in(out) < kill_after:
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"the batch ended (exit {proc.returncode}) before {kill_after} rows")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - started


def run_resumed(
    cmd: list[str], out: Path, env: dict[str, str]
) -> tuple[dict[str, Any], float, float, float]:
    started = time.perf_counter()
    before = lines_in(out)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = peak = 0.0
    chunks: dict[str, str] = {}

    def read(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [
        threading.Thread(target=read, args=(n, s))
        for n, s in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for t in readers:
        t.start()
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            if not base and lines_in(out) - before >= 2000:
                base = rss
            if base:
                peak = max(peak, rss)
        time.sleep(0.5)
    for t in readers:
        t.join()
    if proc.returncode not in (0, 1):
        tail = chunks.get("err", "")[-2000:]
        raise SystemExit(f"--resume failed (exit {proc.returncode}): {tail}")
    return json.loads(chunks["out"]), time.perf_counter() - started, base, peak


def traces_in(db: Path) -> Counter[str]:
    with sqlite3.connect(db) as conn:
        return Counter(r[0] for r in conn.execute("SELECT request_id FROM trace_info"))


def one_batch(
    label: str, workflow: Path, rows: int, concurrency: int, kill_at: float, tmp: Path
) -> bool:
    data, out, db = tmp / f"{label}.jsonl", tmp / f"{label}-results.jsonl", tmp / f"{label}.db"
    write_rows(data, rows)
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CONFIGURABLE_AGENTS_SPOOL": str(tmp / f"{label}-spool.db"),
    }
    base_cmd = [
        *CLI,
        "batch",
        str(workflow),
        "--data",
        str(data),
        "-o",
        str(out),
        "-c",
        str(concurrency),
        "--json",
    ]
    print(f"\n{label}: {rows:,} rows, -c {concurrency}, SIGKILL at {kill_at:.0%}, then --resume")
    killed_s = run_killed(base_cmd, out, int(rows * kill_at), env)
    first = len(results(out))
    print(f"   killed after {killed_s:.0f} s with {first:,} rows in the results file")
    summary, resumed_s, base, peak = run_resumed([*base_cmd, "--resume"], out, env)
    print(
        f"   resumed: {summary['this_run']['rows']:,} rows in {resumed_s:.0f} s "
        f"({summary['this_run']['rows'] / resumed_s:.1f} rows/s), "
        f"{summary['succeeded']:,} succeeded, {summary['failed']:,} failed in all"
    )
    t0 = time.perf_counter()
    flushed = subprocess.run(
        [*CLI, "observability", "flush", "--workflow", str(workflow)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(f"   flush: exit {flushed.returncode} in {time.perf_counter() - t0:.0f} s")
    lines = results(out)
    seen = Counter(line["row"] for line in lines)
    once = seen == Counter(range(rows))
    wanted = Counter(line["trace_id"] for line in lines if line["trace_id"])
    stored = traces_in(db)
    missing = sum(1 for t in wanted if t not in stored)
    doubled = sum(1 for t in wanted if stored[t] > 1)
    ok = once and not missing and not doubled and flushed.returncode == 0
    print(
        f"   rows in the results file: {len(lines):,} lines, {len(seen):,} distinct rows, "
        f"every row exactly once: {'yes' if once else 'NO'}"
    )
    print(f"   traces: {len(wanted):,} answered, {missing} missing in the store, {doubled} doubled")
    if base:
        growth = peak - base
        print(
            f"   RSS of the resumed CLI: {base:.0f} MB after 2,000 rows, peak {peak:.0f} MB: "
            f"growth {growth:.1f} MB (target <= {RSS_TARGET_MB:.0f}): "
            f"{'PASS' if growth <= RSS_TARGET_MB else 'FAIL'}"
        )
        ok = ok and growth <= RSS_TARGET_MB
    print(f"   {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--kill-at", type=float, default=0.3)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-test", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        ok = True
        if not args.skip_local:
            wf = tmp / "headlines.yaml"
            wf.write_text(HEADLINES.replace("STORE", f"sqlite:///{tmp / 'local.db'}"))
            ok &= one_batch("local", wf, args.local_rows, 2, args.kill_at, tmp)
        if not args.skip_test:
            wf = tmp / "two_node.yaml"
            text = (HERE / "two_node.yaml").read_text()
            store = f"sqlite:///{tmp / 'test.db'}"
            traced = f"  observability:\n    mlflow: {{enabled: true, tracking_uri: '{store}'}}\n"
            wf.write_text(text.replace("config:\n", "config:\n" + traced, 1))
            ok &= one_batch("test", wf, args.test_rows, 16, args.kill_at, tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The tracing pipeline, measured side by side in one run (issue "Tracing that costs nothing").

1. **Caller's path.** The 2-node ``bench/two_node.yaml`` on the zero-latency ``test`` model, in
   alternating blocks: our run with tracing off, with tracing on (the spool append), and the
   same graph written by hand against LangGraph. Prints the append cost per run (target
   <= 1 ms) and ours-traced / hand (target <= 1.2x). No drainer runs meanwhile; the runs go
   to a spool of the bench's own (in its temporary folder, not the user's).
2. **Writer throughput.** N spooled runs drained into a fresh SQLite store (and PostgreSQL,
   when Debian's server is installed) by our batched writer, against MLflow's own client
   (``TracingClient.start_trace`` + ``log_spans`` per trace) on the same runs. Prints traces/s
   (targets: SQLite >= 1,000/s, PostgreSQL >= 300/s) and the ratio.
3. **The person at the terminal.** ``configurable-agents run`` of the same workflow as a fresh
   process, traced and untraced, alternating; wall time until the command returns (target:
   traced <= 1.1x untraced). The detached drainer a traced run starts is left to work.

    python bench/tracing_pipeline.py [--runs 600] [--traces 3000] [--cli 8] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import configurable_agents as ca
from configurable_agents.observe.trace.drain import Drainer, tune_gc
from configurable_agents.observe.trace.mlflow_sink import MlflowSink
from configurable_agents.observe.trace.spool import open_spool
from overhead import INPUTS, WORKFLOW, build_hand_graph


def compile_for(store: str) -> ca.CompiledWorkflow:
    loaded = ca.load_workflow(WORKFLOW)
    config = loaded.spec.config.observability.mlflow
    config.tracking_uri = store
    config.experiment_name = "bench"
    return ca.compile_workflow(loaded)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def caller_path(tmp: Path, runs: int, block: int) -> tuple[float, float]:
    # A store nobody writes during the timing: the drainer is not started (see below).
    store = "sqlite:///" + str(tmp / "caller.db")
    compiled = compile_for(store)
    model = compiled.nodes["write"].model
    hand = build_hand_graph(model)
    state = {"topic": INPUTS["topic"], "title": "", "article": "", "tags": []}
    import configurable_agents.observe.trace.drain as drain

    started = drain.ensure_drained
    drain.ensure_drained = lambda spool, sinks: None  # type: ignore[assignment]
    os.environ["CONFIGURABLE_AGENTS_SPOOL"] = str(tmp / "caller.spool")
    sides: dict[str, Callable[[], Any]] = {
        "off": lambda: ca.run_workflow(compiled, INPUTS, trace=False),
        "on": lambda: ca.run_workflow(compiled, INPUTS, trace=True),
        "hand": lambda: hand.invoke(dict(state)),
    }
    for fn in sides.values():
        for _ in range(50):
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    gc.collect()
    for i in range(max(runs // block, 1)):
        order = names[i % 3 :] + names[: i % 3]
        for name in order:
            for _ in range(block):
                times[name].append(timed(sides[name]))
    drain.ensure_drained = started  # type: ignore[assignment]
    del os.environ["CONFIGURABLE_AGENTS_SPOOL"]
    off, on, hand_ms = (statistics.median(times[k]) for k in ("off", "on", "hand"))
    print(f"1. caller's path, {len(times['on'])} runs per side (median ms per run):")
    print(f"   hand-written LangGraph {hand_ms:7.3f}")
    print(f"   ours, tracing off      {off:7.3f}   {off / hand_ms:.2f}x hand")
    print(f"   ours, tracing on       {on:7.3f}   {on / hand_ms:.2f}x hand (target <= 1.2x)")
    print(f"   spool append per run   {on - off:+7.3f} ms (target <= 1 ms)")
    return on - off, on / hand_ms


def spool_runs(tmp: Path, name: str, store: str, n: int) -> Path:
    path = tmp / f"{name}.spool"
    os.environ["CONFIGURABLE_AGENTS_SPOOL"] = str(path)
    compiled = compile_for(store)
    import configurable_agents.observe.trace.drain as drain

    started = drain.ensure_drained
    drain.ensure_drained = lambda spool, sinks: None  # type: ignore[assignment]
    try:
        for i in range(n):
            ca.run_workflow(compiled, {"topic": f"topic {i}"}, trace=True)
    finally:
        drain.ensure_drained = started  # type: ignore[assignment]
        del os.environ["CONFIGURABLE_AGENTS_SPOOL"]
    return path


def throughput(tmp: Path, label: str, make_store: Callable[[str], str], n: int) -> float:
    ours_store = make_store("ours")
    MlflowSink(ours_store, "bench").open()  # create the store (migrations) untimed
    path = spool_runs(tmp, f"{label}-ours", ours_store, n)
    tune_gc()  # as a detached drainer and `observability flush` do
    drainer = Drainer(open_spool(path))
    start = time.perf_counter()
    left = drainer.drain(600)
    ours = n / (time.perf_counter() - start)
    assert left == 0, f"{left} left in the spool"

    sample = max(n // 10, 50)
    client_store = make_store("client")
    sink = MlflowSink(client_store, "bench")
    sink.open()
    sink.fast = False  # MLflow's own client, one trace at a time
    path = spool_runs(tmp, f"{label}-client", client_store, sample)
    spool = open_spool(path)
    (state,) = spool.sinks()
    batch = [(e.record_id, e.load()) for e in spool.claim(state.id, "bench", sample)]
    start = time.perf_counter()
    sink.write(batch)
    theirs = sample / (time.perf_counter() - start)
    sink.close()
    print(
        f"   {label:<10} ours {ours:8.0f} traces/s ({n} traces)   MLflow client "
        f"{theirs:6.0f} traces/s ({sample} traces)   {ours / theirs:5.1f}x"
    )
    return ours


def cli_wall(tmp: Path, reps: int) -> float:
    work = tmp / "cli"
    work.mkdir()
    text = WORKFLOW.read_text().replace(
        "config:\n",
        "config:\n  observability:\n    mlflow: {enabled: false, tracking_uri: "
        f"'sqlite:///{work / 'mlflow.db'}'}}\n",
        1,
    )
    path = work / "wf.yaml"
    path.write_text(text)
    env = {**os.environ, "CONFIGURABLE_AGENTS_STATE_DIR": str(work / "state")}
    cmd = [sys.executable, "-m", "configurable_agents", "run", str(path), "-i", "topic=x"]

    def once(flag: str) -> float:
        start = time.perf_counter()
        subprocess.run([*cmd, flag], env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    once("--trace")  # first traced run creates the store (in the background)
    time.sleep(8)
    times: dict[str, list[float]] = {"--no-trace": [], "--trace": []}
    for i in range(reps):
        for flag in ["--no-trace", "--trace"] if i % 2 == 0 else ["--trace", "--no-trace"]:
            times[flag].append(once(flag))
    off, on = (statistics.median(times[k]) for k in ("--no-trace", "--trace"))
    print(f"3. CLI wall time, {reps} runs each, alternating (median):")
    print(f"   untraced {off:6.2f} s   traced {on:6.2f} s   {on / off:.2f}x (target <= 1.1x)")
    return on / off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--cli", type=int, default=8)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="ca-bench-") as name:
        tmp = Path(name)
        os.environ["CONFIGURABLE_AGENTS_STATE_DIR"] = str(tmp / "state")
        append, ratio = caller_path(tmp, args.runs, args.block)
        ok &= append <= 1.0 and ratio <= 1.2
        print("2. writer throughput (drain of spooled 2-node runs, pricing and artifacts in):")
        sqlite = throughput(
            tmp, "SQLite", lambda side: "sqlite:///" + str(tmp / f"{side}.db"), args.traces
        )
        ok &= sqlite >= 1000
        if not args.skip_postgres:
            try:
                from servers import start_postgres

                server = start_postgres()
            except Exception as exc:  # noqa: BLE001 - no server here: say so
                print(f"   PostgreSQL skipped: {exc}")
            else:
                try:
                    pg = throughput(
                        tmp,
                        "PostgreSQL",
                        lambda side: server.create_database(f"bench_{side}"),
                        args.traces,
                    )
                    ok &= pg >= 300
                finally:
                    server.stop()
        ok &= cli_wall(tmp, args.cli) <= 1.1
    print("PASS" if ok else "FAIL (see the targets above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP server with tracing on: throughput against the bare endpoint, and no trace lost
when the server is stopped (SIGTERM) or killed (SIGKILL) under load.

1. **Throughput.** ``serve`` with MLflow tracing on (into a SQLite store; every run spooled
   before its answer, drainers writing in the background) against the bare FastAPI +
   LangGraph endpoint of ``server_load.py``, in alternating blocks. Target: >= 0.9x req/s.
2. **Kill tests.** Requests in flight at ``--concurrency``; once ``--kill-after`` of them are
   answered the server gets SIGTERM (then, in a second round, SIGKILL). Then
   ``configurable-agents observability flush`` runs, and every answered run's trace
   (``trace_id`` in the answer) must be in the store exactly once, with all its spans and no
   span twice. Target: 0 lost, 0 duplicated, both rounds.

    python bench/server_tracing.py [--requests 3000] [--concurrency 16] [--kill-after 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import server_load as sl  # noqa: E402 - the servers and the load generator

TARGET = 0.9
FLUSH = [sys.executable, "-m", "configurable_agents", "observability", "flush"]
SPANS_PER_TRACE = 5  # the 2-node workflow: run, 2 nodes, 2 chat calls


def traced_workflow(tmp: Path) -> Path:
    store = tmp / "mlflow.db"
    text = sl.WORKFLOW.read_text().replace(
        "config:\n",
        f"config:\n  observability:\n    mlflow: {{enabled: true, tracking_uri: 'sqlite:///{store}'}}\n",
        1,
    )
    path = tmp / "two_node_traced.yaml"
    path.write_text(text)
    return path


def serve_traced(port: int, database: str, workflow: str) -> None:
    import uvicorn

    from configurable_agents.serve import create_app

    app = create_app(workflow, database_url=database, api_key="", trace=True)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()


class Traced(sl.Server):
    def __init__(self, database: str, workflow: Path, env: dict[str, str]) -> None:
        self.side = "ours"
        self.port = sl.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "--serve", "--port", str(self.port)]
        cmd += ["--database", database, "--workflow", str(workflow)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
        self.latencies: list[float] = []
        self.errors = 0
        self.why: list[str] = []
        self.busy_s = 0.0
        self.cpu_s = 0.0
        self.rss_start = 0.0


def flush(workflow: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [*FLUSH, "--workflow", str(workflow), "--timeout", "600"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def stored(store: Path, trace_ids: list[str]) -> tuple[int, int, int]:
    """(traces found, traces missing, traces whose spans are missing or doubled)."""
    with sqlite3.connect(store) as conn:
        found = dict(conn.execute("SELECT request_id, 1 FROM trace_info").fetchall())
        spans = dict(
            conn.execute("SELECT trace_id, count(*) FROM spans GROUP BY trace_id").fetchall()
        )
    conn.close()
    present = [t for t in trace_ids if t in found]
    wrong = sum(1 for t in present if spans.get(t) != SPANS_PER_TRACE)
    return len(present), len(trace_ids) - len(present), wrong


async def kill_round(
    how: signal.Signals, tmp: Path, workflow: Path, env: dict[str, str], args: Any
) -> tuple[int, int, int, int]:
    import httpx

    server = Traced(f"sqlite:///{tmp / f'runs-{how.name}.db'}", workflow, env)
    server.wait_ready()
    answered: list[str] = []
    todo = iter(range(args.requests))
    killed = asyncio.Event()

    async def worker(client: Any) -> None:
        for _ in todo:
            if killed.is_set():
                return
            try:
                response = await client.post(f"{server.url}/runs", json=sl.BODY)
            except httpx.HTTPError:
                continue  # the server went away with this request: never answered
            if response.status_code == 200 and response.json().get("trace_id"):
                answered.append(response.json()["trace_id"])
                if len(answered) >= args.kill_after and not killed.is_set():
                    killed.set()
                    os.kill(server.proc.pid, how)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    server.proc.wait(60)
    took = flush(workflow, env)
    found, missing, wrong = stored(tmp / "mlflow.db", answered)
    print(
        f"   {how.name:<8} answered {len(answered):5d}   in the store after flush {found:5d}"
        f"   lost {missing}   spans missing/doubled {wrong}   (flush {took:.1f} s)"
    )
    return len(answered), found, missing, wrong


def throughput(tmp: Path, workflow: Path, env: dict[str, str], args: Any) -> float:
    servers = [
        Traced(f"sqlite:///{tmp / 'runs-load.db'}", workflow, env),
        sl.Server("bare", "", None),
    ]
    try:
        for server in servers:
            server.wait_ready()
        load_args = argparse.Namespace(
            requests=args.requests, concurrency=args.concurrency, block=args.block, warmup=200
        )
        asyncio.run(sl.load(servers, load_args))
    finally:
        rates = {s.side: len(s.latencies) / s.busy_s if s.busy_s else float("nan") for s in servers}
        for s in servers:
            s.stop()
    errors = sum(s.errors for s in servers)
    ratio = rates["ours"] / rates["bare"]
    cpu = {s.side: 1000 * s.cpu_s / len(s.latencies) if s.latencies else 0.0 for s in servers}
    print(
        f"1. throughput, {args.requests} requests/side at concurrency {args.concurrency}: "
        f"ours traced {rates['ours']:.0f} req/s, bare {rates['bare']:.0f} req/s, "
        f"{ratio:.2f}x (target >= {TARGET}x), {errors} error(s); server CPU ms/req: "
        f"ours {cpu['ours']:.2f}, bare {cpu['bare']:.2f}; load average {os.getloadavg()[0]:.1f}"
    )
    took = flush(workflow, env)
    print(f"   the spool drained by flush in {took:.1f} s after the load")
    return ratio if errors == 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--kill-after", type=int, default=300)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--workflow", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_traced(args.port, args.database, args.workflow)
        return 0
    # ignore_cleanup_errors: a detached drainer may still be writing artifacts in there
    with tempfile.TemporaryDirectory(prefix="server-tracing-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        workflow = traced_workflow(tmp)
        env = {
            **os.environ,
            "CONFIGURABLE_AGENTS_SPOOL": str(tmp / "spool.db"),
            "CONFIGURABLE_AGENTS_STATE_DIR": str(tmp / "state"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        ratio = throughput(tmp, workflow, env, args)
        print("2. kill tests: requests in flight, the server stopped, then `flush`:")
        rounds = [
            asyncio.run(kill_round(how, tmp, workflow, env, args))
            for how in (signal.SIGTERM, signal.SIGKILL)
        ]
    lost = sum(r[2] + r[3] for r in rounds)
    ok = ratio >= TARGET and lost == 0
    print("PASS" if ok else "FAIL (see the targets above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

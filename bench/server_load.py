"""HTTP server under load: our ``serve`` app vs a bare FastAPI + LangGraph endpoint.

Both servers run the 2-node workflow ``bench/two_node.yaml`` on the zero-latency ``test``
provider, each in its own process (uvicorn, one worker, 127.0.0.1, access log off):

* **ours**: ``configurable_agents.serve.create_app(two_node.yaml, trace=False)``: auth-free
  ``POST /runs`` with run records in a SQLite file (WAL), Prometheus metrics on, cost and
  per-node timings in every response. MLflow tracing is off (this measures the server).
* **bare**: a FastAPI app with one sync ``POST /runs`` endpoint invoking the hand-written
  LangGraph graph of ``bench/overhead.py`` on the same ``TestChatModel`` calls.

A loopback load generator (this process: asyncio + httpx, ``--concurrency`` connections)
sends ``{"inputs": {"topic": ...}}`` in alternating blocks (ours first in even blocks, bare
first in odd ones) so that noise hits both. Per side: req/s (requests / time under load),
p50/p99 latency, errors (non-200 or a run not succeeded), RSS growth of the server process
from after warm-up to the end. PASS: ours/bare req/s >= 0.8 and no errors.

    python bench/server_load.py [--requests 10000] [--concurrency 32] [--block 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE / "two_node.yaml"
BODY = {"inputs": {"topic": "tide pools"}}
TARGET = 0.8  # ours / bare req/s, at least


# -- the two servers (each run by this script in a subprocess: --serve ours|bare) ------------


class RunBody(BaseModel):
    """The bare endpoint's body (module level: FastAPI resolves the string annotation here)."""

    inputs: dict[str, Any] = {}


def ours_app(database: str, max_concurrency: int | None) -> Any:
    from configurable_agents.serve import create_app

    return create_app(
        WORKFLOW, database_url=database, max_concurrency=max_concurrency, api_key="", trace=False
    )


def bare_app() -> Any:
    from fastapi import FastAPI

    import configurable_agents as ca

    sys.path.insert(0, str(HERE))
    from overhead import build_hand_graph

    compiled = ca.compile_workflow(ca.load_workflow(WORKFLOW))
    graph = build_hand_graph(compiled.nodes["write"].model)  # the same TestChatModel
    app = FastAPI()

    @app.post("/runs")
    def run(body: RunBody) -> dict[str, Any]:
        state = {"topic": body.inputs["topic"], "title": "", "article": "", "tags": []}
        final = graph.invoke(state)
        outputs = {k: final[k] for k in ("title", "article", "tags")}
        return {"status": "succeeded", "outputs": outputs}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(side: str, port: int, database: str, max_concurrency: int | None) -> None:
    import uvicorn

    app = ours_app(database, max_concurrency) if side == "ours" else bare_app()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()


# -- the load generator ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, side: str, database: str, max_concurrency: int | None) -> None:
        self.side = side
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "--serve", side, "--port", str(self.port)]
        cmd += ["--database", database]
        if max_concurrency:
            cmd += ["--max-concurrency", str(max_concurrency)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        self.latencies: list[float] = []
        self.errors = 0
        self.why: list[str] = []  # the first errors, warm-up included
        self.busy_s = 0.0
        self.cpu_s = 0.0  # the server's CPU time under load
        self.rss_start = 0.0

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the {self.side} server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the {self.side} server did not start in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def drive(server: Server, n: int, concurrency: int, record: bool) -> None:
    """``n`` requests, ``concurrency`` at a time, on fresh connections. A connection idle for
    2 s is not reused: uvicorn closes idle ones after 5 s, and reusing one just then fails."""
    import httpx

    todo = iter(range(n))
    url = f"{server.url}/runs"
    cpu0 = cpu_s(server.proc.pid)
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        t0 = time.perf_counter()
        workers = [worker(client, server, todo, url, record) for _ in range(concurrency)]
        await asyncio.gather(*workers)
        if record:
            server.busy_s += time.perf_counter() - t0
    if record:
        server.cpu_s += cpu_s(server.proc.pid) - cpu0


async def worker(client: Any, server: Server, todo: Any, url: str, record: bool) -> None:

    for _ in todo:
        t0 = time.perf_counter()
        why = ""
        try:
            response = await client.post(url, json=BODY)
            if response.status_code != 200 or response.json()["status"] != "succeeded":
                why = f"HTTP {response.status_code}: {response.text[:200]}"
        except Exception as exc:  # noqa: BLE001 - counted as an error
            why = f"{type(exc).__name__}: {exc!r}"
        if record:
            server.latencies.append(time.perf_counter() - t0)
        if why:
            server.errors += record
            if len(server.why) < 5:
                server.why.append(why)


async def load(servers: list[Server], args: argparse.Namespace) -> None:
    import httpx

    outputs = []
    async with httpx.AsyncClient(timeout=120) as client:
        for server in servers:
            response = await client.post(f"{server.url}/runs", json=BODY)
            data = response.json()
            if response.status_code != 200:
                raise SystemExit(f"{server.side}: {response.status_code} {data}")
            outputs.append(data["outputs"])
    if outputs[0] != outputs[1]:
        raise SystemExit(f"the servers disagree: {outputs}")
    for server in servers:
        await drive(server, args.warmup, args.concurrency, record=False)
    gc.collect()
    for server in servers:
        server.rss_start = rss_mb(server.proc.pid)
    done = 0
    block = 0
    while done < args.requests:
        n = min(args.block, args.requests - done)
        order = servers if block % 2 == 0 else servers[::-1]
        for server in order:
            await drive(server, n, args.concurrency, record=True)
        done += n
        block += 1
        print(f"  {done}/{args.requests} requests per side", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def report(servers: list[Server], args: argparse.Namespace, database: Path) -> int:
    print(
        f"HTTP server under load: 2-node workflow, provider test, tracing off; "
        f"{args.requests} requests/side at concurrency {args.concurrency}, "
        f"alternating blocks of {args.block} (+{args.warmup} warm-up)"
    )
    print(
        f"  {'side':<5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'CPU ms/req':>10} {'RSS MB':>8} {'growth MB':>10}"
    )
    rates = {}
    for s in servers:
        rate = len(s.latencies) / s.busy_s
        rates[s.side] = rate
        q = statistics.quantiles(s.latencies, n=100)
        rss = rss_mb(s.proc.pid)
        print(
            f"  {s.side:<5} {rate:>8.1f} {statistics.median(s.latencies) * 1000:>8.2f} "
            f"{q[98] * 1000:>8.2f} {s.errors:>7} {s.cpu_s / len(s.latencies) * 1000:>10.2f} "
            f"{rss:>8.1f} {rss - s.rss_start:>+10.1f}"
        )
    for s in servers:
        for why in s.why:
            print(f"  {s.side} error: {why}")
    ratio = rates["ours"] / rates["bare"]
    errors = sum(s.errors for s in servers)
    for s in servers:
        s.stop()
    with sqlite3.connect(database) as conn:
        counts = dict(conn.execute("select status, count(*) from runs group by status").fetchall())
    conn.close()
    print(f"  run records stored by ours: {counts}")
    verdict = "PASS" if ratio >= TARGET and errors == 0 else "FAIL"
    print(
        f"  ratio ours/bare = {ratio:.2f}x req/s (target >= {TARGET:.1f}x), "
        f"{errors} error(s) (target 0): {verdict}"
    )
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="timed requests per side")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight")
    parser.add_argument("--block", type=int, default=1000, help="requests per alternating block")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests per side first")
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="ours: runs at once (default: the app's)"
    )
    parser.add_argument("--serve", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database, args.max_concurrency)
        return 0

    with tempfile.TemporaryDirectory(prefix="server-load-") as tmp:
        database = Path(tmp) / "runs.db"
        servers = [
            Server("ours", f"sqlite:///{database}", args.max_concurrency),
            Server("bare", "", None),
        ]
        try:
            for server in servers:
                server.wait_ready()
            asyncio.run(load(servers, args))
            return report(servers, args, database)
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    sys.exit(main())

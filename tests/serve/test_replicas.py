"""Two server replicas (two ``configurable-agents serve`` processes) on one PostgreSQL database:
they migrate it together, each owns its runs, and when one is killed (SIGKILL) mid-run the other
marks that replica's runs failed once their lease has expired, never its own."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from configurable_agents.serve.records import STOPPED_REASON

from .procs import serve_process, wait_until
from .test_server import SLOW

LEASE = 2.0
ARGS = ("--max-concurrency", "2", "--grace-seconds", "1", "--lease-seconds", str(LEASE))


def test_two_replicas_kill_one(write_workflow: Any, tmp_path: Path, postgres_tracking_uri: str):
    workflow = write_workflow(SLOW.format(latency=8000))
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    with ExitStack() as stack:
        # start both at once: both find an empty database and migrate it (one after the other)
        started: dict[str, tuple[str, Any]] = {}

        def start(name: str) -> None:
            started[name] = stack.enter_context(
                serve_process(workflow, postgres_tracking_uri, logs[name], args=ARGS)
            )

        threads = [threading.Thread(target=start, args=(n,)) for n in logs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        (base_a, proc_a), (base_b, proc_b) = started["a"], started["b"]
        a, b = httpx.Client(base_url=base_a, timeout=30), httpx.Client(base_url=base_b, timeout=30)
        stack.callback(a.close)
        stack.callback(b.close)
        replica_a = a.get("/health").json()["replica"]
        replica_b = b.get("/health").json()["replica"]
        assert replica_a != replica_b

        def submit(client: httpx.Client, topic: str) -> str:
            response = client.post("/runs?wait=false", json={"inputs": {"topic": topic}})
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        ids_a = [submit(a, f"a{i}") for i in range(2)]
        ids_b = [submit(b, f"b{i}") for i in range(2)]

        def status(run_id: str) -> str:
            return str(b.get(f"/runs/{run_id}").json()["status"])

        # Replica B sees A's runs running (from the database): A owns them and renews them.
        wait_until(lambda: all(status(i) == "running" for i in ids_a), 30)
        time.sleep(LEASE * 1.5)  # longer than a lease: A's heartbeat keeps its runs alive
        assert [status(i) for i in ids_a] == ["running", "running"]

        killed_at = time.monotonic()
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(30)

        def failed_a() -> list[dict[str, Any]] | None:
            records = [b.get(f"/runs/{i}").json() for i in ids_a]
            return records if all(r["status"] == "failed" for r in records) else None

        records_a = wait_until(failed_a, 30, every=0.1)
        took = time.monotonic() - killed_at
        print(f"\nthe killed replica's runs failed {took:.1f} s after SIGKILL (lease {LEASE:g} s)")
        for record in records_a:
            message = record["error"]["message"]
            assert record["error"]["type"] == "ServerStopped"
            assert message.startswith(f"{STOPPED_REASON}: server replica {replica_a} ")
        assert took <= LEASE + LEASE / 3 + 5, took  # about a lease (plus a heartbeat, slack)

        # B's own runs were never touched: they finish as if nothing happened.
        def done_b() -> list[dict[str, Any]] | None:
            records = [b.get(f"/runs/{i}").json() for i in ids_b]
            return records if all(r["status"] != "running" for r in records) else None

        records_b = wait_until(done_b, 60, every=0.2)
        assert [r["status"] for r in records_b] == ["succeeded", "succeeded"]
        assert all(r["outputs"] == {"article": "test article"} for r in records_b)
        page = b.get("/runs?status=failed").json()
        assert {r["id"] for r in page["items"]} == set(ids_a)

        proc_b.send_signal(signal.SIGTERM)
        assert proc_b.wait(30) in (0, -signal.SIGTERM)
    log_b = logs["b"].read_text()
    assert f"marked 2 run(s) of server replica(s) {replica_a} as failed" in log_b
    assert "Traceback" not in log_b
    migrated = [
        name for name, log in logs.items() if "migrated from None to 0003" in log.read_text()
    ]
    assert len(migrated) == 1, {n: log.read_text() for n, log in logs.items()}

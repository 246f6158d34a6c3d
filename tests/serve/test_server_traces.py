"""The server's traces survive the server: SIGKILL under load, then ``observability flush``,
and every answered run's trace is in the store exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import httpx
import pytest

from .procs import serve_process
from conftest import MINIMAL

mlflow = pytest.importorskip("mlflow")


def test_sigkill_under_load_then_flush_loses_no_answered_trace(write_workflow, tmp_path):
    store = f"sqlite:///{tmp_path / 'traces.db'}"
    text = MINIMAL.replace(
        "config:\n",
        "config:\n  observability:\n    mlflow:\n      enabled: true\n"
        f"      tracking_uri: '{store}'\n      experiment_name: served\n",
    )
    workflow = write_workflow(text)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    runs = f"sqlite:///{tmp_path / 'runs.db'}"
    with serve_process(workflow, runs, tmp_path / "log", args=("--max-concurrency", "4")) as (
        base,
        proc,
    ):

        def load() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    try:
                        reply = http.post("/runs", json={"inputs": {"topic": "x"}})
                    except httpx.TransportError:
                        return  # the server is gone
                    if reply.status_code == 200:
                        with lock:
                            answered.append(reply.json()["trace_id"])

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        while True:
            with lock:
                if len(answered) >= 40:
                    break
            assert proc.poll() is None
            stop.wait(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        for thread in threads:
            thread.join(30)
    flushed = subprocess.run(
        [sys.executable, "-m", "configurable_agents", "observability", "flush", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert flushed.returncode == 0, flushed.stderr
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("served").experiment_id
    found = [
        t.info.trace_id for t in client.search_traces(locations=[experiment], max_results=5000)
    ]
    assert len(found) == len(set(found))
    assert set(answered) <= set(found), set(answered) - set(found)

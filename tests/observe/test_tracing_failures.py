"""Tracing never fails or stalls a run: unreachable, locked, unwritable and slow stores,
interrupted runs, and 8 processes writing into one SQLite store at once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from configurable_agents.observe import status, tracing

from conftest import EXAMPLES, MINIMAL
from test_cli import TESTS, cli

mlflow = pytest.importorskip("mlflow")


def traced_yaml(uri: str, text: str = MINIMAL, experiment: str = "failures") -> str:
    return text.replace(
        "config:\n",
        "config:\n  observability:\n    mlflow:\n"
        f"      enabled: true\n      tracking_uri: '{uri}'\n      experiment_name: {experiment}\n",
    )


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung store)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://ca@127.0.0.1:1/traces",  # nothing listens on port 1
        "http://127.0.0.1:1",
        "sqlite:///{tmp}/not-a-dir/mlflow.db",  # its parent is a file: cannot be created
    ],
    ids=["postgres-down", "server-down", "sqlite-unwritable"],
)
def test_an_unusable_store_gives_one_warning_and_the_normal_exit_code(
    uri, write_workflow, tmp_path
):
    (tmp_path / "not-a-dir").write_text("a file, not a directory")
    uri = uri.format(tmp=tmp_path)
    started = time.perf_counter()
    proc = cli("run", write_workflow(traced_yaml(uri)), "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = warnings_in(proc.stderr)
    assert len(warnings) == 1, proc.stderr
    assert "could not write the trace to MLflow" in warnings[0]
    assert "observability status" in warnings[0]
    assert "Workflow cost:" in proc.stderr
    assert "Trace:" not in proc.stderr  # no claim that a trace exists
    assert time.perf_counter() - started < 60
    resolved = tracing.resolve_tracking_uri(uri)
    assert status.read(resolved)["last_error"]


def test_a_failing_run_keeps_exit_code_1_with_the_store_down(write_workflow):
    text = MINIMAL.replace(
        "config:\n  llm: {provider: test}",
        "config:\n  llm:\n    provider: test\n    responses: {write: [{article: 5}]}\n"
        "  execution: {max_retries: 0}",
    )
    proc = cli("run", write_workflow(traced_yaml("http://127.0.0.1:1", text)), "-i", "topic=x")
    assert proc.returncode == 1
    assert len(warnings_in(proc.stderr)) == 1


def test_a_hung_store_never_stalls_the_run(write_workflow, silent_port, monkeypatch):
    monkeypatch.setenv(tracing.FLUSH_TIMEOUT_ENV, "2")
    path = write_workflow(traced_yaml(f"http://127.0.0.1:{silent_port}"))
    # In-process: the run returns while its trace is still queued.
    proc = cli("run", path, "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    warnings = warnings_in(proc.stderr)
    assert len(warnings) == 1, proc.stderr
    assert "not written to MLflow after 2 s" in warnings[0]


RETURNS_FIRST = """
import sys
import configurable_agents as ca
from configurable_agents.observe import tracing
result = ca.run_workflow(ca.load_workflow(sys.argv[1]), {"topic": "x"})
print(result.status, tracing.writer().pending, ca.flush(0.2))
"""


def test_the_run_returns_before_its_trace_is_written(write_workflow, silent_port, tmp_path):
    path = write_workflow(traced_yaml(f"http://127.0.0.1:{silent_port}"))
    script = tmp_path / "first.py"
    script.write_text(RETURNS_FIRST)
    env = {**os.environ, tracing.FLUSH_TIMEOUT_ENV: "0.5"}
    proc = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["succeeded", "1", "False"]
    assert "were not written to MLflow within 0 s" in proc.stderr


def test_a_locked_sqlite_store_waits_and_loses_nothing(write_workflow, tmp_path):
    db = tmp_path / "locked.db"
    uri = f"sqlite:///{db}"
    path = write_workflow(traced_yaml(uri))
    first = cli("run", path, "-i", "topic=first")  # creates and migrates the store
    assert first.returncode == 0 and not warnings_in(first.stderr), first.stderr
    locker = sqlite3.connect(db, timeout=30, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(3.0, locker.commit)
    release.start()
    try:
        proc = cli("run", path, "-i", "topic=second")
    finally:
        release.join()
        locker.close()
    assert proc.returncode == 0
    assert not warnings_in(proc.stderr), proc.stderr
    assert "database is locked" not in proc.stderr
    traces = mlflow.MlflowClient(uri).search_traces(
        locations=[mlflow.MlflowClient(uri).get_experiment_by_name("failures").experiment_id]
    )
    assert len(traces) == 2


WORKER = """
import sys
import configurable_agents as ca
compiled = ca.compile_workflow(ca.load_workflow(sys.argv[1]))
for i in range(int(sys.argv[2])):
    ca.run_workflow(compiled, {"topic": f"p{sys.argv[3]}-{i}"}).raise_for_status()
assert ca.flush(120), "traces left unwritten"
"""


def test_eight_processes_into_one_new_sqlite_store(write_workflow, tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    path = write_workflow(traced_yaml(uri, experiment="parallel"))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), "4", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower(), err
        assert "warning" not in err.lower(), err
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("parallel").experiment_id
    traces = client.search_traces(locations=[experiment], max_results=500)
    assert len(traces) == 32
    assert {t.info.state.value for t in traces} == {"OK"}


HANGING = """\
schema_version: "1.0"
flow: {name: hanging}
config:
  llm: {provider: test}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    tools: ['sample_tools:hang']
    outputs: [article]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_is_traced_and_flushed(write_workflow, tmp_path, sig, code):
    uri = f"sqlite:///{tmp_path / 'interrupted.db'}"
    marker = tmp_path / "started"
    path = write_workflow(traced_yaml(uri, HANGING))
    env = {**os.environ, "PYTHONPATH": str(TESTS), "CA_TEST_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "configurable_agents", "run", str(path), "-i", "topic=x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted" in err
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("failures").experiment_id
    (trace,) = client.search_traces(locations=[experiment])
    assert trace.info.state.value == "ERROR"
    assert trace.info.trace_metadata["ca.error_type"] == "RunInterruptedError"
    assert trace.info.trace_metadata["ca.error_node"] == "write"


def test_cli_cost_line_equals_the_trace_and_the_list_price(write_workflow, tmp_path):
    uri = f"sqlite:///{tmp_path / 'cost.db'}"
    text = (EXAMPLES / "review_loop.yaml").read_text()
    text = text.replace(
        "config:\n",
        textwrap.dedent(f"""\
        config:
          observability:
            mlflow: {{enabled: true, tracking_uri: '{uri}', experiment_name: cost}}
        """),
        1,
    )
    proc = cli("run", write_workflow(text), "-i", "topic=bees", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    expected = 62 * 0.30e-6 + 19 * 2.50e-6
    assert data["cost"]["total_usd"] == pytest.approx(expected)
    trace = mlflow.MlflowClient(uri).get_trace(data["trace_id"])
    assert float(trace.info.trace_metadata["ca.total_cost_usd"]) == pytest.approx(expected)
    proc = cli("run", write_workflow(text, "again.yaml"), "-i", "topic=bees")
    assert "Workflow cost: $0.000066, 81 tokens" in proc.stderr
    assert "Trace: tr-" in proc.stderr
    assert f"mlflow ui --backend-store-uri {uri}" in proc.stderr


def test_a_read_only_store_gives_one_warning(write_workflow, tmp_path):
    db = tmp_path / "ro.db"
    first = cli("run", write_workflow(traced_yaml(f"sqlite:///{db}")), "-i", "topic=x")
    assert first.returncode == 0 and not warnings_in(first.stderr), first.stderr
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    proc = cli("run", write_workflow(traced_yaml(read_only), "ro.yaml"), "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    warnings = warnings_in(proc.stderr)
    assert len(warnings) == 1, proc.stderr
    assert "readonly database" in warnings[0]
    assert "readonly database" in status.read(read_only)["last_error"]

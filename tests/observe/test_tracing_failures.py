"""Tracing never fails, stalls or loses a run: unreachable, locked, unwritable and hung
stores, interrupted and killed processes, 8 processes writing into one SQLite store at once,
a spool at its cap, and no password from a store URL anywhere."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import configurable_agents as ca
from configurable_agents.observe.trace.drain import Drainer
from configurable_agents.observe.trace.spool import Spool, open_spool, spool_path
from servers import PostgresServer

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


def spool() -> Spool:
    return open_spool(spool_path())


def flush_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("observability", "flush", "--timeout", "60", *args)


def traces_in(uri: str, experiment: str = "failures") -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_traces(locations=[found.experiment_id], max_results=5000)


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://ca@127.0.0.1:1/traces",  # nothing listens on port 1
        "http://127.0.0.1:1",
        "sqlite:///{tmp}/not-a-dir/mlflow.db",  # its parent is a file: cannot be created
    ],
    ids=["postgres-down", "server-down", "sqlite-unwritable"],
)
def test_an_unusable_store_gives_one_warning_keeps_the_trace_and_the_exit_code(
    uri, write_workflow, tmp_path
):
    (tmp_path / "not-a-dir").write_text("a file, not a directory")
    uri = uri.format(tmp=tmp_path)
    proc = cli("run", write_workflow(traced_yaml(uri)), "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = warnings_in(proc.stderr)
    assert len(warnings) == 1, proc.stderr
    assert "cannot be written" in warnings[0] and "kept in the local spool" in warnings[0]
    assert "Workflow cost:" in proc.stderr
    assert spool().pending() == 1  # nothing lost: it waits for the store
    flushed = flush_cli()
    assert flushed.returncode == 1  # still down: said, not hidden
    assert "pending: 1 for MLflow at" in flushed.stderr
    assert spool().pending() == 1


def test_a_failing_run_keeps_exit_code_1_with_the_store_down(write_workflow):
    text = MINIMAL.replace(
        "config:\n  llm: {provider: test}",
        "config:\n  llm:\n    provider: test\n    responses: {write: [{article: 5}]}\n"
        "  execution: {max_retries: 0}",
    )
    proc = cli("run", write_workflow(traced_yaml("http://127.0.0.1:1", text)), "-i", "topic=x")
    assert proc.returncode == 1
    assert len(warnings_in(proc.stderr)) == 1


def test_a_store_down_for_the_whole_run_is_drained_once_it_is_up(write_workflow, tmp_path):
    db = tmp_path / "later" / "mlflow.db"
    (tmp_path / "later").write_text("not yet a folder")  # the store cannot be created
    uri = f"sqlite:///{db}"
    path = write_workflow(traced_yaml(uri))
    compiled = ca.compile_workflow(ca.load_workflow(path))
    ids = [ca.run_workflow(compiled, {"topic": f"t{i}"}).trace_id for i in range(5)]
    assert ca.flush(2) is False  # the store is down: flush says so, bounded
    assert spool().pending() == 5
    (tmp_path / "later").unlink()
    (tmp_path / "later").mkdir()  # the store is back
    assert ca.flush(120)
    found = sorted(t.info.trace_id for t in traces_in(uri))
    assert found == sorted(ids)


def test_a_hung_store_never_stalls_the_run(write_workflow, silent_port):
    path = write_workflow(traced_yaml(f"http://127.0.0.1:{silent_port}"))
    started = time.perf_counter()
    proc = cli("run", path, "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - started < 60  # bounded; nothing waits for the store
    assert spool().pending() == 1


def test_sync_logging_with_a_store_down_waits_a_bounded_time(write_workflow, monkeypatch):
    monkeypatch.setenv("CONFIGURABLE_AGENTS_FLUSH_TIMEOUT", "1")
    text = traced_yaml("http://127.0.0.1:1").replace(
        "experiment_name: failures\n", "experiment_name: failures\n      async_logging: false\n"
    )
    result = ca.run_workflow(write_workflow(text), {"topic": "x"})
    assert result.succeeded and not result.trace_written
    assert spool().pending() == 1


def test_a_locked_sqlite_store_waits_and_loses_nothing(write_workflow, tmp_path):
    db = tmp_path / "locked.db"
    uri = f"sqlite:///{db}"
    path = write_workflow(traced_yaml(uri))
    first = cli("run", path, "-i", "topic=first")  # creates and migrates the store
    assert first.returncode == 0 and not warnings_in(first.stderr), first.stderr
    assert flush_cli().returncode == 0
    locker = sqlite3.connect(db, timeout=30, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(3.0, locker.commit)
    release.start()
    try:
        proc = cli("run", path, "-i", "topic=second")
        assert flush_cli().returncode == 0
    finally:
        release.join()
        locker.close()
    assert proc.returncode == 0
    assert not warnings_in(proc.stderr), proc.stderr
    assert len(traces_in(uri)) == 2


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
    traces = traces_in(uri, "parallel")
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
def test_an_interrupted_run_is_traced(write_workflow, tmp_path, sig, code):
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
    assert flush_cli().returncode == 0
    (trace,) = traces_in(uri)
    assert trace.info.state.value == "ERROR"
    assert trace.info.trace_metadata["ca.error_type"] == "RunInterruptedError"
    assert trace.info.trace_metadata["ca.error_node"] == "write"


KILLED = """
import sys
import configurable_agents as ca
compiled = ca.compile_workflow(ca.load_workflow(sys.argv[1]))
i = 0
while True:
    result = ca.run_workflow(compiled, {"topic": f"k{i}"})
    print(result.trace_id, flush=True)  # answered: from here on it must never be lost
    i += 1
"""


def test_a_process_killed_mid_load_loses_no_answered_trace(write_workflow, tmp_path):
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    path = write_workflow(traced_yaml(uri, experiment="killed"))
    script = tmp_path / "load.py"
    script.write_text(KILLED)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    assert proc.stdout is not None
    answered = []
    for line in proc.stdout:
        answered.append(line.strip())
        if len(answered) == 60:
            proc.send_signal(signal.SIGKILL)
            break
    answered += [line.strip() for line in proc.stdout if line.strip()]
    proc.stdout.close()
    proc.wait(timeout=30)
    # Drain twice: the second drain finds nothing and the first wrote each trace once.
    assert flush_cli().returncode == 0
    assert flush_cli().returncode == 0
    found = [t.info.trace_id for t in traces_in(uri, "killed")]
    assert len(found) == len(set(found))  # no duplicates
    assert set(answered) <= set(found)  # nothing answered is lost


def test_a_retried_batch_never_duplicates_a_trace(write_workflow, tmp_path):
    """A drainer that wrote a batch and died before deleting it: the next drain skips what
    the store already has."""
    from configurable_agents.observe.trace.drain import open_sink

    uri = f"sqlite:///{tmp_path / 'retry.db'}"
    path = write_workflow(traced_yaml(uri, experiment="retry"))
    compiled = ca.compile_workflow(ca.load_workflow(path))
    for i in range(3):
        ca.run_workflow(compiled, {"topic": f"r{i}"})
    queue = spool()
    (state,) = queue.sinks()
    entries = queue.claim(state.id, "crashed", 100)
    sink = open_sink("mlflow", {"uri": uri, "exp": "retry"})
    result = sink.write([(e.record_id, e.load()) for e in entries])
    sink.close()
    assert len(result.delivered) == 3  # written, but never marked delivered ("crash")
    queue.release(state.id, [e.record_id for e in entries])
    assert Drainer(queue).drain(60) == 0
    assert len(traces_in(uri, "retry")) == 3
    spans = mlflow.MlflowClient(uri).get_trace(traces_in(uri, "retry")[0].info.trace_id)
    assert len(spans.data.spans) == 3  # workflow, node, chat: spans not doubled either


def test_a_spool_at_its_cap_drops_the_oldest_with_one_warning(write_workflow, caplog):
    text = traced_yaml("http://127.0.0.1:1").replace(
        "  observability:\n", "  observability:\n    spool: {max_mb: 1}\n", 1
    )
    compiled = ca.compile_workflow(ca.load_workflow(write_workflow(text)))
    big = "x" * 50_000
    with caplog.at_level("WARNING", logger="configurable_agents.observe"):
        for _ in range(60):
            ca.run_workflow(compiled, {"topic": big})
    queue = spool()
    assert queue.counter("dropped") > 0
    assert 0 < queue.pending() < 60
    full = [r for r in caplog.records if "spool" in r.getMessage() and "full" in r.getMessage()]
    assert len(full) == 1


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
    assert flush_cli().returncode == 0
    trace = mlflow.MlflowClient(uri).get_trace(data["trace_id"])
    assert float(trace.info.trace_metadata["ca.total_cost_usd"]) == pytest.approx(expected)
    proc = cli("run", write_workflow(text, "again.yaml"), "-i", "topic=bees")
    assert "Workflow cost: $0.000066, 81 tokens" in proc.stderr
    assert "Trace: tr-" in proc.stderr
    assert f"mlflow ui --backend-store-uri {uri}" in proc.stderr


def test_a_read_only_store_is_reported_by_flush_and_status(write_workflow, tmp_path):
    db = tmp_path / "ro.db"
    first = cli("run", write_workflow(traced_yaml(f"sqlite:///{db}")), "-i", "topic=x")
    assert first.returncode == 0 and not warnings_in(first.stderr), first.stderr
    assert flush_cli().returncode == 0
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    proc = cli("run", write_workflow(traced_yaml(read_only), "ro.yaml"), "-i", "topic=x")
    assert proc.returncode == 0, proc.stderr
    flushed = flush_cli()
    assert flushed.returncode == 1
    assert "readonly database" in flushed.stderr
    status = cli("observability", "status", "--tracking-uri", read_only, "--json")
    import json

    info = json.loads(status.stdout)
    assert info["spool"]["pending"] == 1
    (sink,) = [s for s in info["spool"]["sinks"] if s["pending"]]
    assert "readonly database" in sink["last_error"]
    assert sink["oldest_pending_age_s"] >= 0


def test_no_password_from_a_store_url_reaches_any_output_or_file(
    write_workflow, tmp_path, postgres_server: PostgresServer
):
    secret = "s3cr3t-Pa55word"
    # The throwaway cluster trusts loopback, so it ignores the password; what is checked is
    # that the password given in the URL is never printed or stored by us.
    plain = postgres_server.create_database("failures_secret")
    url = plain.replace(f"{postgres_server.user}@", f"{postgres_server.user}:{secret}@")
    path = write_workflow(traced_yaml(url))
    outputs = [cli("run", path, "-i", "topic=x", "--tag", "user=ann")]
    outputs.append(cli("run", path, "-i", "topic=y", "--json"))
    outputs.append(cli("observability", "flush", "--workflow", str(path), "--timeout", "120"))
    outputs.append(cli("observability", "status", "--workflow", str(path)))
    outputs.append(cli("observability", "status", "--workflow", str(path), "--json"))
    down = url.replace(f":{postgres_server.port}/", ":1/")
    outputs.append(cli("run", write_workflow(traced_yaml(down), "down.yaml"), "-i", "topic=z"))
    outputs.append(cli("observability", "flush", "--timeout", "5"))
    assert outputs[2].returncode == 0, outputs[2].stderr
    for proc in outputs:
        assert secret not in proc.stdout + proc.stderr
    state = Path(os.environ["CONFIGURABLE_AGENTS_STATE_DIR"])
    for file in [*state.rglob("*"), *tmp_path.rglob("*"), *Path.cwd().rglob("*")]:
        if file.is_file() and file.suffix != ".yaml":  # the user's own files hold it
            assert secret.encode() not in file.read_bytes(), file
    assert len(traces_in(url)) == 2

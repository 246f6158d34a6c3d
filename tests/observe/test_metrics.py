"""Prometheus metrics: the SPEC's names, types and labels, recorded by real runs; and runs
without a /metrics (the CLI, scripts) pushed to a real Pushgateway (Debian's
prometheus-pushgateway) that a real Prometheus scrapes, where their counters add up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.metrics import recorder as metrics
from configurable_agents.observe.trace import drain as drain_module
from configurable_agents.observe.trace import sinks_for
from configurable_agents.observe.trace.drain import Drainer
from configurable_agents.observe.trace.spool import FORMAT, SpoolRecord, open_spool
from servers import free_port, log_tail, skip_unless_ci

from conftest import EXAMPLES, MINIMAL

pytest.importorskip("prometheus_client")

FAILING = """\
schema_version: "1.0"
flow: {name: failing}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses: {score: [{value: "nope"}]}
  execution: {max_retries: 0}
  observability:
    prometheus: {enabled: true}
state:
  fields:
    topic: {type: str, required: true}
    value: {type: int, default: 0}
nodes:
  - id: score
    prompt: "Score {topic}."
    outputs: [value]
edges:
  - {from: START, to: score}
  - {from: score, to: END}
"""


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> metrics.Metrics:
    m = metrics.Metrics()
    monkeypatch.setattr(metrics, "_metrics", m)
    monkeypatch.setattr(metrics, "_enabled", True)
    return m


def value(m: metrics.Metrics, name: str, **labels: str) -> float:
    sample = m.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_runs_tokens_cost_and_durations_are_recorded(fresh, write_workflow):
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    ca.run_workflow(workflow, {"topic": "bees"})
    ca.run_workflow(workflow, {"topic": "bees"})
    ca.run_workflow(ca.load_workflow(write_workflow(FAILING)), {"topic": "x"})
    assert ca.flush(30)  # runs are recorded off the caller's path
    m = fresh
    assert value(m, "workflow_runs_total", workflow="review_loop", status="succeeded") == 2
    assert value(m, "workflow_runs_total", workflow="failing", status="failed") == 1
    assert value(m, "llm_tokens_total", model="gemini-2.5-flash", type="input") >= 124
    assert value(m, "llm_tokens_total", model="gemini-2.5-flash", type="output") >= 38
    cost = value(m, "llm_cost_usd_total", model="gemini-2.5-flash")
    assert cost >= 2 * (62 * 0.30e-6 + 19 * 2.50e-6) * 0.999
    assert value(m, "workflow_duration_seconds_count", workflow="review_loop") == 2
    assert value(m, "node_duration_seconds_count", workflow="review_loop", node="review") == 4
    assert value(m, "node_duration_seconds_count", workflow="failing", node="score") == 1
    assert value(m, "active_workflows", workflow="review_loop") == 0


def test_recording_metrics_leaves_the_callers_record_as_it_was(fresh):
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(workflow, {"topic": "bees"})
    before = [(n.cost_usd, [c.cost_usd for c in n.calls]) for n in result.nodes]
    assert ca.flush(30)  # the metrics thread has priced the run by now
    assert value(fresh, "llm_cost_usd_total", model="gemini-2.5-flash") > 0
    assert [(n.cost_usd, [c.cost_usd for c in n.calls]) for n in result.nodes] == before
    assert result.cost is None  # priced only when the caller asks (summarize_cost)


def test_active_workflows_counts_runs_in_progress(fresh):
    seen = []

    def watch(kind: str, record: object) -> None:
        if kind == "node_start":
            seen.append(value(fresh, "active_workflows", workflow="review_loop"))

    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    ca.run_workflow(workflow, {"topic": "bees"}, on_event=watch)
    assert ca.flush(30)
    assert seen and set(seen) == {1.0}
    assert value(fresh, "active_workflows", workflow="review_loop") == 0


def test_nothing_is_recorded_when_metrics_are_off(monkeypatch):
    m = metrics.Metrics()
    monkeypatch.setattr(metrics, "_metrics", m)
    monkeypatch.setattr(metrics, "_enabled", False)
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    ca.run_workflow(workflow, {"topic": "bees"})
    assert ca.flush(30)
    assert value(m, "workflow_runs_total", workflow="review_loop", status="succeeded") == 0


# --------------------------------------------------------------------------- Pushgateway

HOST = socket.gethostname()


def push_workflow(name: str, gateway: str, *, enabled: bool = True) -> str:
    """MINIMAL as workflow ``name``, priced as gemini-2.5-flash, pushing to ``gateway``."""
    prometheus = json.dumps({"enabled": enabled, "pushgateway_url": gateway})
    return MINIMAL.replace("flow: {name: demo}", f"flow: {{name: {name}}}").replace(
        "  llm: {provider: test}\n",
        "  llm: {provider: test, model: gemini-2.5-flash}\n"
        f"  observability:\n    prometheus: {prometheus}\n",
    )


def start_pushgateway(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Debian's prometheus-pushgateway on 127.0.0.1:``port``, in memory (not in the file that
    Debian's build persists to by default, shared by every pushgateway on the machine)."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        skip_unless_ci("prometheus-pushgateway not found (Debian package prometheus-pushgateway)")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                "--persistence.file=",  # Debian's default is a file in /var/lib/prometheus
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                pytest.fail(f"the pushgateway did not start:\n{log_tail(log)}")
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Stack:
    """A Pushgateway (``gateway``), the port of a second one that is down until a test starts
    it (``late_port``), and a Prometheus scraping both every second with honor_labels."""

    root: Path
    gateway: str
    late_port: int
    prometheus: str = ""
    prometheus_log: Path | None = None

    @property
    def late(self) -> str:
        return f"http://127.0.0.1:{self.late_port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.prometheus}/api/v1/query?{query}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, json.dumps(result, indent=1)
        return float(result[0]["value"][1]) if result else None

    def wait(self, expr: str, check: Callable[[float], bool], timeout: float = 60) -> float:
        """Poll ``expr`` until its one value passes ``check`` (a scrape or two, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.scalar(expr)
            if found is not None and check(found):
                return found
            if time.monotonic() > deadline:
                log = log_tail(self.prometheus_log) if self.prometheus_log else ""
                pytest.fail(f"{expr} is {found} after {timeout:.0f} s\n{log}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="pushgateway-test-"))
    port = free_port()
    gateway = start_pushgateway(port, root / "pushgateway.log")
    try:
        yield Stack(root, f"http://127.0.0.1:{port}", free_port())
    finally:
        stop(gateway)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        skip_unless_ci("prometheus not found (Debian package 'prometheus')")
    targets = [urllib.parse.urlsplit(stack.gateway).netloc, f"127.0.0.1:{stack.late_port}"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    (stack.root / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    log = stack.root / "prometheus.log"
    argv = [
        binary,
        f"--config.file={stack.root / 'prometheus.yml'}",
        f"--storage.tsdb.path={stack.root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=stack.root
        )
    stack.prometheus, stack.prometheus_log = f"http://127.0.0.1:{port}", log
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"prometheus exited:\n{log_tail(log)}"
            try:
                with urllib.request.urlopen(f"{stack.prometheus}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"prometheus not ready:\n{log_tail(log)}"
                time.sleep(0.2)
        yield stack
    finally:
        stop(process)


@pytest.fixture
def in_process_drain(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """No detached drainers: the test drains the spool itself (``drain(timeout)`` returns
    what is still pending). Also: this process serves no /metrics, so runs are pushed."""
    monkeypatch.setattr(drain_module, "ensure_drained", lambda spool, sinks: None)
    monkeypatch.setattr(metrics, "_enabled", False)

    def drain(timeout: float = 30, *, ignore_backoff: bool = True) -> int:
        drainer = Drainer(open_spool())
        try:
            return drainer.drain(timeout, ignore_backoff=ignore_backoff)
        finally:
            drainer.close()

    return drain


def gateway_samples(gateway: str, name: str, **labels: str) -> list[Any]:
    """The samples ``name`` with ``labels`` that the Pushgateway serves on /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(gateway + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def test_pushed_runs_add_up_in_prometheus(prometheus, write_workflow, in_process_drain):
    """Two batches of runs, each drained to the Pushgateway: Prometheus sees one counter
    per series that grows by each batch (no reset), and tokens, cost and histograms that
    add up over every run."""
    workflow = ca.compile_workflow(
        ca.load_workflow(write_workflow(push_workflow("push_counts", prometheus.gateway)))
    )
    tokens = {"input": 0, "output": 0}
    cost = 0.0

    def batch(n: int) -> None:
        nonlocal cost
        for _ in range(n):
            result = ca.run_workflow(workflow, {"topic": "bees"})
            assert result.succeeded, result.error
            entry = ca.summarize_cost(result).by_model["gemini-2.5-flash"]
            tokens["input"] += entry.input_tokens
            tokens["output"] += entry.output_tokens
            cost += entry.cost_usd
        assert in_process_drain() == 0

    runs = 'workflow_runs_total{workflow="push_counts"}'
    batch(3)
    assert prometheus.wait(runs, lambda v: v >= 3) == 3
    (series,) = prometheus.query(runs)
    labels = series["metric"]
    assert labels["job"] == "configurable_agents" and labels["instance"] == HOST
    assert labels["status"] == "succeeded" and len(labels["spool"]) == 8
    group = f'spool="{labels["spool"]}"'

    batch(2)
    assert prometheus.wait(runs, lambda v: v >= 5) == 5
    # increase() extrapolates to the window's edges (a few % here), so it is compared
    # rounded; the counter never went backwards, so it is the second batch's 2 runs.
    prometheus.wait(f"increase({runs}[10m])", lambda v: abs(v - 2) < 0.5)
    assert prometheus.scalar(f"resets({runs}[10m])") == 0
    assert prometheus.scalar(f"sum(increase({runs}[10m]))") == pytest.approx(2, abs=0.5)

    for kind, expected in tokens.items():
        found = prometheus.scalar(f'llm_tokens_total{{{group},type="{kind}"}}')
        assert found == expected > 0
    found = prometheus.scalar(f'llm_cost_usd_total{{{group},model="gemini-2.5-flash"}}')
    assert found == pytest.approx(cost, rel=1e-9) and cost > 0

    def duration(part: str, extra: str = "") -> float | None:
        return prometheus.scalar(
            f'workflow_duration_seconds_{part}{{{group},workflow="push_counts"{extra}}}'
        )

    assert duration("count") == 5
    assert duration("bucket", ',le="+Inf"') == 5
    # The Pushgateway re-renders bucket bounds in Go's format (le="600", not "600.0").
    assert duration("bucket", ',le=~"600(\\\\.0)?"') == 5
    assert (duration("sum") or 0) > 0
    node = f'node_duration_seconds_count{{{group},workflow="push_counts",node="write"}}'
    assert prometheus.scalar(node) == 5
    assert not prometheus.query(f"active_workflows{{{group}}}")  # not pushed

    # Records the spool has forgotten are forgotten by the totals too (the second batch is
    # still marked: its marks go with the next write).
    import sqlite3

    db = sqlite3.connect(open_spool().path)
    try:
        assert db.execute("SELECT count(*) FROM push_applied").fetchone()[0] == 2
    finally:
        db.close()


def test_a_gateway_that_is_down_gets_the_runs_once_it_is_up(
    prometheus, write_workflow, in_process_drain
):
    """Runs pushed while the gateway is down stay in the spool; retries while it is down
    count nothing twice; once it is up the runs arrive, each counted once."""
    workflow = ca.compile_workflow(
        ca.load_workflow(write_workflow(push_workflow("push_late", prometheus.late)))
    )
    for _ in range(2):
        assert ca.run_workflow(workflow, {"topic": "bees"}).succeeded
    assert in_process_drain(2, ignore_backoff=False) == 2  # tried (and backed off) for 2 s
    assert in_process_drain(1) == 2  # tried again, at once
    (state,) = [s for s in open_spool().sinks() if s.kind == "metrics"]
    assert state.pending == 2 and "Connection refused" in (state.last_error or "")

    late = start_pushgateway(prometheus.late_port, prometheus.root / "late.log")
    try:
        assert in_process_drain() == 0
        (sample,) = gateway_samples(prometheus.late, "workflow_runs_total", workflow="push_late")
        assert sample.value == 2 and sample.labels["instance"] == HOST
        runs = 'workflow_runs_total{workflow="push_late"}'
        assert prometheus.wait(runs, lambda v: v >= 2) == 2

        assert ca.run_workflow(workflow, {"topic": "bees"}).succeeded
        assert in_process_drain() == 0
        assert prometheus.wait(runs, lambda v: v >= 3) == 3
        assert prometheus.scalar(f"resets({runs}[10m])") == 0
    finally:
        stop(late)


def test_a_batch_written_twice_is_counted_once(stack, tmp_path):
    """A drainer killed after the push but before the spool forgot the batch writes it again:
    the totals do not change. Records that are not runs are rejected, not counted."""
    from configurable_agents.observe.metrics.push import PushSink

    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    record = SpoolRecord(FORMAT, "run", {"result": ca.run_workflow(workflow, {"topic": "x"})})
    sink = PushSink(stack.gateway, state_path=tmp_path / "totals.db")
    try:
        group = sink.group()
        assert sink.write([(1, record)]).delivered == [1]
        assert sink.write([(1, record)]).delivered == [1]
        result = sink.write([(2, record), (3, SpoolRecord(FORMAT, "run", {}))])
        assert result.delivered == [2] and list(result.rejected) == [3]
    finally:
        sink.close()
    (sample,) = gateway_samples(
        stack.gateway, "workflow_runs_total", workflow="review_loop", **group
    )
    assert sample.value == 2
    (count,) = gateway_samples(stack.gateway, "node_duration_seconds_count", node="review", **group)
    assert count.value == 4  # two reviews per run


def test_the_pushgateway_gets_the_judges_scores(stack, tmp_path):
    """``judge_score`` by workflow and judge, from in-run and ``warn`` judges alike."""
    from configurable_agents.observe.metrics.push import PushSink

    results = []
    for score in (2, 5):  # the same workflow, judged 2 then 5
        path = tmp_path / f"judged{score}.yaml"
        text = MINIMAL.replace("flow: {name: demo}", "flow: {name: judged_push}")
        text += "judges:\n"
        text += '  - {name: final_ok, instructions: "Rate {{ outputs }} 1-5.", threshold: 4}\n'
        config = f"  llm:\n    provider: test\n    responses: {{final_ok: [{{score: {score}}}]}}\n"
        path.write_text(text.replace("  llm: {provider: test}\n", config))
        results.append(ca.run_workflow(path, {"topic": "x"}))
    assert ca.flush(60)
    assert [j.score for r in results for j in r.judges] == [2, 5]
    sink = PushSink(stack.gateway, state_path=tmp_path / "totals.db")
    try:
        group = sink.group()
        batch = [(i, SpoolRecord(FORMAT, "run", {"result": r})) for i, r in enumerate(results)]
        assert sink.write(batch).delivered == [0, 1]
    finally:
        sink.close()
    labels = {"workflow": "judged_push", "judge": "final_ok", **group}
    (count,) = gateway_samples(stack.gateway, "judge_score_count", **labels)
    (total,) = gateway_samples(stack.gateway, "judge_score_sum", **labels)
    buckets = gateway_samples(stack.gateway, "judge_score_bucket", **labels)
    (low,) = [b for b in buckets if float(b.labels["le"]) == 2.0]
    assert (count.value, total.value, low.value) == (2, 7, 1)


def test_cli_runs_push_cumulative_metrics(stack, write_workflow):
    """Two CLI runs (their detached drainers push): one group for the machine's spool, and
    the counter is 2, not 1."""
    text = (
        (EXAMPLES / "review_loop.yaml")
        .read_text()
        .replace(
            "config:\n",
            "config:\n  observability:\n"
            f"    prometheus: {{enabled: true, pushgateway_url: '{stack.gateway}'}}\n",
            1,
        )
    )
    path = write_workflow(text)
    src = Path(ca.__file__).resolve().parent.parent
    tests = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(tests)]), "NO_COLOR": "1"}
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "configurable_agents", "run", str(path), "-i", "topic=bees"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr
        drainer = Drainer(open_spool())  # waits for the CLI's detached drainer
        try:
            assert drainer.drain(60) == 0
        finally:
            drainer.close()
    import sqlite3

    db = sqlite3.connect(open_spool().path)
    try:
        ((spool, host),) = db.execute("SELECT store, host FROM push_store").fetchall()
    finally:
        db.close()
    (sample,) = gateway_samples(
        stack.gateway, "workflow_runs_total", workflow="review_loop", spool=spool
    )
    assert sample.value == 2
    assert sample.labels["instance"] == host == HOST
    assert sample.labels["job"] == "configurable_agents" and sample.labels["status"] == "succeeded"
    (cost,) = gateway_samples(stack.gateway, "llm_cost_usd_total", spool=spool)
    assert cost.labels["model"] == "gemini-2.5-flash" and cost.value > 0


def test_the_pushgateway_gets_runs_only_when_prometheus_is_enabled(write_workflow, monkeypatch):
    """As the CLI did before: ``pushgateway_url`` alone pushes nothing; and a process that
    serves its own /metrics (the server) does not push its runs too."""

    def kinds(enabled: bool) -> list[str]:
        loaded = ca.load_workflow(
            write_workflow(push_workflow("w", "http://gw:9091", enabled=enabled))
        )
        return [s.kind for s in sinks_for(loaded.spec.config.observability).sinks]

    monkeypatch.setattr(metrics, "_enabled", False)
    assert kinds(True) == ["metrics"]
    assert kinds(False) == []
    monkeypatch.setattr(metrics, "_enabled", True)
    assert kinds(True) == []


def test_a_gateway_password_is_sent_as_basic_auth_and_never_stored(tmp_path):
    from configurable_agents.observe.metrics.push import PushSink, _auth

    url, handler = _auth("https://ann:s3cret%21@gw.example:9091/prefix")
    assert url == "https://gw.example:9091/prefix" and handler.__name__ == "handler"
    assert _auth("http://gw:9091")[0] == "http://gw:9091"
    sink = PushSink("http://ann:s3cret@127.0.0.1:1", state_path=tmp_path / "totals.db")
    try:
        assert "s3cret" not in sink.key
        workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
        record = SpoolRecord(FORMAT, "run", {"result": ca.run_workflow(workflow, {"topic": "x"})})
        result = sink.write([(1, record)])
        assert list(result.failed) == [1] and "s3cret" not in result.failed[1]
    finally:
        sink.close()
    assert b"s3cret" not in (tmp_path / "totals.db").read_bytes()

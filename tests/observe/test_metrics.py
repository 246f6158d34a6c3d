"""Prometheus metrics: the SPEC's names, types and labels, recorded by real runs."""

from __future__ import annotations

import pytest

import configurable_agents as ca
from configurable_agents.observe.metrics import recorder as metrics

from conftest import EXAMPLES

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


def test_active_workflows_counts_runs_in_progress(fresh):
    seen = []

    def watch(kind: str, record: object) -> None:
        if kind == "node_start":
            seen.append(value(fresh, "active_workflows", workflow="review_loop"))

    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    ca.run_workflow(workflow, {"topic": "bees"}, on_event=watch)
    assert seen and set(seen) == {1.0}
    assert value(fresh, "active_workflows", workflow="review_loop") == 0


def test_nothing_is_recorded_when_metrics_are_off(monkeypatch):
    m = metrics.Metrics()
    monkeypatch.setattr(metrics, "_metrics", m)
    monkeypatch.setattr(metrics, "_enabled", False)
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    ca.run_workflow(workflow, {"topic": "bees"})
    assert value(m, "workflow_runs_total", workflow="review_loop", status="succeeded") == 0


@pytest.fixture
def pushgateway(tmp_path):
    """A real Prometheus Pushgateway (Debian's prometheus-pushgateway) on 127.0.0.1."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        from servers import skip_unless_ci

        skip_unless_ci("prometheus-pushgateway is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "pushgateway did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_cli_runs_push_their_metrics_to_a_pushgateway(pushgateway, write_workflow):
    import urllib.request

    from test_cli import cli

    text = (
        (EXAMPLES / "review_loop.yaml")
        .read_text()
        .replace(
            "config:\n",
            "config:\n  observability:\n"
            f"    prometheus: {{enabled: true, pushgateway_url: '{pushgateway}'}}\n",
            1,
        )
    )
    proc = cli("run", write_workflow(text), "-i", "topic=bees")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    with urllib.request.urlopen(pushgateway + "/metrics", timeout=5) as response:
        body = response.read().decode()
    assert (
        'workflow_runs_total{instance="",job="configurable_agents",status="succeeded",'
        'workflow="review_loop"} 1'
    ) in body
    assert (
        'llm_cost_usd_total{instance="",job="configurable_agents",model="gemini-2.5-flash"}' in body
    )


def test_an_unreachable_pushgateway_is_one_warning(write_workflow):
    from test_cli import cli

    text = MINIMAL_PUSH
    proc = cli("run", write_workflow(text), "-i", "topic=x")
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "could not push metrics" in warnings[0]


MINIMAL_PUSH = """\
schema_version: "1.0"
flow: {name: demo}
config:
  llm: {provider: test}
  observability:
    prometheus: {enabled: true, pushgateway_url: "http://127.0.0.1:1"}
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

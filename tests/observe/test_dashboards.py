"""Grafana dashboards: sane JSON, and every panel query answers on a live Prometheus.

The live test runs Debian's ``prometheus`` on 127.0.0.1 (1 s scrapes, temporary storage, our
alert rules loaded) against a metrics target that serves this package's real metrics while
real workflow runs happen (succeeded and failed). No Grafana server runs here, so each panel
target's ``expr`` goes to Prometheus' HTTP API after the dashboard variables are replaced with
concrete values, the way Grafana would. Without ``prometheus`` the live tests skip on a
developer's machine and fail on CI.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import configurable_agents as ca
from configurable_agents.observe.metrics import alerts
from configurable_agents.observe.metrics import recorder as metrics
from configurable_agents.observe.metrics.dashboards import (
    DASHBOARDS,
    build_dashboards,
    panel_queries,
    write_dashboards,
)
from servers import free_port, log_tail, skip_unless_ci

from conftest import EXAMPLES

pytest.importorskip("grafana_foundation_sdk")
pytest.importorskip("prometheus_client")

FAILING = """\
schema_version: "1.0"
flow: {name: failing}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    latency_ms: 5
    responses: {score: [{value: "not a number"}]}
  execution: {max_retries: 0}
state:
  fields:
    topic: {type: str, required: true}
    value: {type: int, default: 0}
nodes:
  - id: score
    prompt: "Score {topic}."
    outputs: [value]
    output_schema: {fields: [{name: value, type: int}]}
edges:
  - {from: START, to: score}
  - {from: score, to: END}
"""

VARIABLES = {"datasource", "workflow", "model", "node"}


# --------------------------------------------------------------------------- structure


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return build_dashboards()


def test_three_dashboards_with_unique_uids_and_titles(dashboards):
    assert set(dashboards) == set(DASHBOARDS)
    uids = {d["uid"] for d in dashboards.values()}
    assert uids == {uid for uid, _ in DASHBOARDS.values()}
    for file, data in dashboards.items():
        assert data["title"].endswith(DASHBOARDS[file][1])
        assert "configurable-agents" in data["tags"]


def test_variables_datasource_and_targets(dashboards):
    for file, data in dashboards.items():
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        expected = {"llm-usage-cost.json": "model"}.get(file, "workflow")
        assert variables[expected]["type"] == "query"
        assert variables[expected]["includeAll"] and variables[expected]["allValue"] == ".*"
        assert variables[expected]["query"].startswith("label_values(")
        assert variables[expected]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids)) and all(ids), file
        for panel in data["panels"]:
            assert panel["title"] and panel["description"], file
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__range", "__rate_interval"}
                assert used <= set(variables), (panel["title"], used)
        titles = [p["title"] for p in data["panels"]]
        assert len(titles) == len(set(titles)), file
        for panel in data["panels"]:
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_dashboards_cover_the_spec_metrics(dashboards):
    exprs = " ".join(t["expr"] for d in dashboards.values() for _, t in panel_queries(d))
    for metric in (
        "workflow_runs_total",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "workflow_duration_seconds_bucket",
        "node_duration_seconds_bucket",
        "active_workflows",
    ):
        assert metric in exprs


def test_write_dashboards_writes_json_files(tmp_path, dashboards):
    paths = write_dashboards(tmp_path / "dash")
    assert sorted(p.name for p in paths) == sorted(DASHBOARDS)
    for path in paths:
        assert json.loads(path.read_text(encoding="utf-8")) == dashboards[path.name]


# --------------------------------------------------------------------------- live Prometheus


@dataclass
class MetricsTarget:
    """Somewhere serving our /metrics while workflow runs happen in the background."""

    mode: str  # "serve" (configurable_agents.serve.create_app) or "in-process"
    targets: list[str]
    runs: int = 0
    errors: list[str] = field(default_factory=list)


def _workflow_files(directory: Path) -> tuple[Path, Path]:
    yaml = YAML()
    doc = yaml.load((EXAMPLES / "review_loop.yaml").read_text(encoding="utf-8"))
    doc["config"]["llm"]["latency_ms"] = 20  # runs take a measurable time
    review = directory / "review_loop.yaml"
    with review.open("w", encoding="utf-8") as out:
        yaml.dump(doc, out)
    failing = directory / "failing.yaml"
    failing.write_text(FAILING, encoding="utf-8")
    return review, failing


def _drive(target: MetricsTarget, stop: threading.Event, run_once: Any) -> threading.Thread:
    def loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                run_once(failing=n % 4 == 3)  # one run in four fails
                target.runs += 1
            except Exception as exc:  # noqa: BLE001 - reported by the test
                target.errors.append(f"{type(exc).__name__}: {exc}")
            n += 1
            stop.wait(0.05)

    thread = threading.Thread(target=loop, name="workflow-runs", daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def metrics_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsTarget]:
    """Our real metrics on 127.0.0.1 while real runs happen: through the HTTP server when
    ``configurable_agents.serve`` exists, else from runs in this process."""
    directory = tmp_path_factory.mktemp("metrics-target")
    review, failing = _workflow_files(directory)
    stop = threading.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_metrics", metrics.Metrics())  # a fresh registry for this module
        mp.setattr(metrics, "_enabled", True)
        try:
            from configurable_agents.serve import create_app
        except ImportError:
            create_app = None
        if create_app is not None:
            yield from _serve_target(create_app, review, failing, directory, stop)
        else:
            yield from _in_process_target(review, failing, stop)


def _in_process_target(
    review: Path, failing: Path, stop: threading.Event
) -> Iterator[MetricsTarget]:
    from prometheus_client import start_http_server

    workflows = {
        False: ca.compile_workflow(ca.load_workflow(review)),
        True: ca.compile_workflow(ca.load_workflow(failing)),
    }

    def run_once(failing: bool) -> None:
        result = ca.run_workflow(workflows[failing], {"topic": "bees"})
        assert result.succeeded is not failing, result.error

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry())
    target = MetricsTarget("in-process", [f"127.0.0.1:{port}"])
    runner = _drive(target, stop, run_once)
    try:
        yield target
    finally:
        stop.set()
        runner.join(30)
        server.shutdown()
        server.server_close()
        thread.join(10)


def _serve_target(
    create_app: Any, review: Path, failing: Path, directory: Path, stop: threading.Event
) -> Iterator[MetricsTarget]:
    import httpx
    import uvicorn

    servers = []
    urls = {}
    for is_failing, path in ((False, review), (True, failing)):
        port = free_port()
        app = create_app(str(path), database_url=f"sqlite:///{directory / path.stem}.db")
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        urls[is_failing] = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not all(s.started for s, _ in servers):
        assert time.monotonic() < deadline, "the workflow servers did not start"
        time.sleep(0.05)
    client = httpx.Client(timeout=30)

    def run_once(failing: bool) -> None:
        resp = client.post(f"{urls[failing]}/runs", json={"inputs": {"topic": "bees"}})
        status = resp.json().get("status") if resp.status_code == 200 else None
        if status != ("failed" if failing else "succeeded"):
            raise AssertionError(f"POST /runs: {resp.status_code} {resp.text[:300]}")

    target = MetricsTarget("serve", [u.removeprefix("http://") for u in urls.values()])
    runner = _drive(target, stop, run_once)
    try:
        yield target
    finally:
        stop.set()
        runner.join(30)
        client.close()
        for server, thread in servers:
            server.should_exit = True
            thread.join(30)


@dataclass
class Prometheus:
    url: str
    started: float
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


@pytest.fixture(scope="module")
def prometheus(metrics_target: MetricsTarget) -> Iterator[Prometheus]:
    """A real Prometheus on 127.0.0.1 scraping the target every second, our rules loaded."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_unless_ci("prometheus not found (Debian package 'prometheus': .ci/install-servers.sh)")
    root = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
    alerts.write_rules(root / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": "configurable-agents",
                "static_configs": [{"targets": metrics_target.targets}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    log = root / "prometheus.log"
    argv = [
        binary,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=root
        )
    server = Prometheus(f"http://127.0.0.1:{port}", time.time(), process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"prometheus exited:\n{log_tail(log)}"
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log_tail(log)}"
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _finite(result: list[dict[str, Any]]) -> bool:
    """Some series has some finite value (NaN, as from a quantile over no runs, is no data)."""
    for series in result:
        values = series.get("values") or [series.get("value")]
        if any(v is not None and math.isfinite(float(v[1])) for v in values):
            return True
    return False


def _substitute(expr: str, values: dict[str, str], elapsed: int) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return expr.replace("$__rate_interval", "10s").replace("$__range", f"{elapsed}s")


def _evaluate(prom: Prometheus, target: dict[str, Any], values: dict[str, str]) -> tuple[str, Any]:
    now = time.time()
    elapsed = max(10, int(now - prom.started))
    expr = _substitute(target["expr"], values, elapsed)
    assert "$" not in expr, expr
    if target.get("instant"):
        data = prom.api("query", query=expr, time=f"{now:.3f}")
    else:
        data = prom.api(
            "query_range", query=expr, start=f"{prom.started:.3f}", end=f"{now:.3f}", step="1"
        )
    return expr, data["result"]


def _wait_for(check: Any, timeout: float = 90.0) -> list[str]:
    """Call ``check()`` (which returns what is still missing) until it returns nothing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = check()
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1)


def _variable_values(prom: Prometheus, query: str, values: dict[str, str]) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` would offer."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, query
    selector = _substitute(match.group(1), values, 60)
    return list(prom.api(f"label/{match.group(2)}/values", **{"match[]": selector}))


@pytest.mark.parametrize("selection", ["all", "one"])
def test_every_panel_query_returns_data(prometheus, metrics_target, dashboards, selection):
    """With every variable on All, then on its first value: each target answers with data."""
    first_scrape = _wait_for(
        lambda: [] if prometheus.api("query", query="up == 1")["result"] else ["up"]
    )
    assert not first_scrape, f"the target was never scraped:\n{log_tail(prometheus.log)}"
    problems: list[str] = []
    for file, data in dashboards.items():
        values = {"datasource": "prometheus"}
        for variable in data["templating"]["list"]:
            if variable["type"] != "query":
                continue

            def offers(v: dict[str, Any] = variable, chosen: dict[str, str] = values) -> list[str]:
                return [] if _variable_values(prometheus, v["query"], chosen) else ["-"]

            offered = _wait_for(offers)
            assert not offered, f"{file}: variable ${variable['name']} offers no values"
            choices = _variable_values(prometheus, variable["query"], values)
            # One value is regex-escaped, its backslashes doubled inside the PromQL string.
            one = re.escape(sorted(choices)[-1]).replace("\\", "\\\\")
            values[variable["name"]] = ".*" if selection == "all" else one

        def missing(data: dict[str, Any] = data, values: dict[str, str] = values) -> list[str]:
            lacking = []
            for title, target in panel_queries(data):
                expr, result = _evaluate(prometheus, target, values)
                if not _finite(result):
                    lacking.append(f"{title} [{target['refId']}]: {expr}")
            return lacking

        problems += [f"{file}: {m}" for m in _wait_for(missing)]
    assert metrics_target.runs > 0 and not metrics_target.errors, metrics_target.errors
    print(f"metrics target: {metrics_target.mode}, {metrics_target.runs} runs")
    assert not problems, "panel queries without data:\n" + "\n".join(problems)


def test_recording_rules_evaluate_on_live_metrics(prometheus, metrics_target):
    """Our rules load without errors and the dashboards' alert inputs have real values."""
    wanted = [
        "workflow:runs:rate5m",
        "workflow:error_ratio:rate5m",
        "workflow:duration_seconds:p95_5m",
        "node:duration_seconds:p95_5m",
        "llm:tokens:rate5m",
        "llm:cost_usd:rate1h",
        "llm:cost_usd_per_hour:rate1h",
    ]

    def missing() -> list[str]:
        return [r for r in wanted if not _finite(prometheus.api("query", query=r)["result"])]

    assert not _wait_for(missing), missing()
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 17
    assert all(rule["health"] == "ok" for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
    ]
    ratio = prometheus.api("query", query='workflow:error_ratio:rate5m{workflow="failing"}')
    assert float(ratio["result"][0]["value"][1]) == 1.0
    cost = prometheus.api("query", query="llm:cost_usd:rate1h")["result"]
    assert {s["metric"]["model"] for s in cost} == {"gemini-2.5-flash"}
    assert all(float(s["value"][1]) > 0 for s in cost)

"""An alias ``prompt_ref`` followed at run time (``prompts.registry.PromptSource``): a workflow
compiled once (as ``serve`` holds it) runs on the version the alias names now, re-read after the
TTL (``CA_PROMPT_ALIAS_TTL``, default 60 s) with one registry call per TTL, on a thread of its
own (no run waits for it; the run that starts it keeps the version it has); a version number is
read once; a failed refresh keeps the last good version with one warning; a new version that
does not fit the state is not used. On a real SQLite MLflow store, with the clock moved forward
instead of waiting."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.prompts import registry

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: alias_demo}}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses: {{write: [{{text: "Bees dance."}}]}}
  observability:
    mlflow:
      {{enabled: {trace}, tracking_uri: "{uri}", experiment_name: alias, async_logging: false}}
state:
  fields:
    topic: {{type: str, required: true}}
    text: {{type: str}}
nodes:
  - id: write
{node}    outputs: [text]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""
ALIAS_REF = "    prompt_ref: {name: write_prompt, alias: production}\n"


class Clock:
    """``registry.clock`` under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    registry.clear_cache()
    fake = Clock()
    monkeypatch.setattr(registry, "clock", fake)
    monkeypatch.delenv(registry.ALIAS_TTL_ENV, raising=False)
    yield fake
    registry.clear_cache()


def client(uri: str) -> Any:
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def store(tmp_path: Path, *templates: str) -> str:
    """A SQLite store with ``write_prompt`` versions 1, 2, … and production → 1."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    c.search_experiments()  # creates the store's tables
    for template in templates:
        c.register_prompt(name="write_prompt", template=template)
    if templates:
        c.set_prompt_alias("write_prompt", "production", 1)
    return uri


def compiled(tmp_path: Path, uri: str, node: str = ALIAS_REF, trace: bool = False) -> Any:
    path = tmp_path / "wf.yaml"
    text = WORKFLOW.format(uri=uri, node=node, trace=str(trace).lower())
    path.write_text(text, encoding="utf-8")
    return ca.compile_workflow(ca.load_workflow(path))


def registry_calls(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[str]:
    """Every ``MlflowClient.load_prompt`` (what ``registry._fetch`` calls), by prompt URI."""
    calls: list[str] = []
    original = mlflow.MlflowClient.load_prompt

    def spy(self: Any, uri: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(uri)
        if delay:
            time.sleep(delay)
        return original(self, uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "load_prompt", spy)
    return calls


def run(workflow: Any, topic: str = "bees") -> Any:
    result = ca.run_workflow(workflow, {"topic": topic})
    assert result.succeeded, result.error
    return result


def refreshed() -> None:
    """Wait for the refresh a run past the TTL started (it never waits itself)."""
    assert registry.join_refreshes(30)


def used(result: Any) -> tuple[str, str | None]:
    node = result.nodes[0]
    return node.prompt, node.prompt_version


def prompt_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "configurable_agents.prompts" and r.levelno >= logging.WARNING
    ]


def test_a_moved_alias_reaches_a_compiled_workflow_after_the_ttl(tmp_path, clock, monkeypatch):
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }}")
    workflow = compiled(tmp_path, uri, trace=True)
    calls = registry_calls(monkeypatch)
    first = run(workflow)
    assert used(first) == ("v1 about bees", "write_prompt/1")
    client(uri).set_prompt_alias("write_prompt", "production", 2)
    clock.advance(registry.ALIAS_TTL_SECONDS - 1)
    assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")  # within the TTL
    assert calls == []  # ... the runs never asked the registry
    clock.advance(1)
    assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")  # starts the refresh
    refreshed()
    second = run(workflow)
    assert used(second) == ("v2 about bees", "write_prompt/2")
    assert calls == ["prompts:/write_prompt@production"]  # one call for the refresh
    assert used(run(workflow)) == ("v2 about bees", "write_prompt/2")
    assert len(calls) == 1
    assert workflow.nodes["write"].prompt_version == "write_prompt/2"
    assert second.to_dict()["nodes"][0]["prompt_version"] == "write_prompt/2"
    # the trace shows the version each run used: the span attribute and MLflow's link
    assert ca.flush(60)
    for result, version in ((first, "1"), (second, "2")):
        trace = client(uri).get_trace(result.trace_id)
        node = next(s for s in trace.data.spans if s.name == "write")
        assert node.attributes["node.prompt_version"] == f"write_prompt/{version}"
        linked = json.loads(trace.info.tags["mlflow.linkedPrompts"])
        assert linked == [{"name": "write_prompt", "version": version}]


def test_a_version_number_is_never_read_again(tmp_path, clock, monkeypatch):
    uri = store(tmp_path, "v1 about {{ topic }}")
    workflow = compiled(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    assert workflow.nodes["write"].prompt_source is None
    calls = registry_calls(monkeypatch)
    clock.advance(10 * 365 * 86400)
    assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")
    ca.compile_workflow(workflow.workflow)  # a new compile: cached too
    assert calls == []


def test_one_registry_call_per_ttl_however_many_runs_at_once(tmp_path, clock, monkeypatch):
    """Past the TTL, one visit starts the refresh; every visit (that one too) runs on the
    version it has meanwhile, without waiting for the registry."""
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }}")
    workflows = [compiled(tmp_path, uri), compiled(tmp_path, uri)]  # two nodes, one alias
    client(uri).set_prompt_alias("write_prompt", "production", 2)
    clock.advance(registry.ALIAS_TTL_SECONDS)
    calls = registry_calls(monkeypatch, delay=0.5)
    quick: list[float] = []
    versions: list[str | None] = []
    start = threading.Barrier(9)

    def visit(workflow: Any) -> None:
        start.wait()
        began = time.perf_counter()
        versions.append(workflow.nodes["write"].prompt()[1])
        quick.append(time.perf_counter() - began)

    threads = [threading.Thread(target=visit, args=(workflows[i % 2],)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(quick) < 0.25  # the registry answers in 0.5 s: no visit waited for it
    assert versions == ["write_prompt/1"] * 9
    refreshed()
    assert calls == ["prompts:/write_prompt@production"]
    # the other workflow's node, refreshed by the first, needs no call of its own
    assert {w.nodes["write"].prompt()[1] for w in workflows} == {"write_prompt/2"}
    assert len(calls) == 1


def test_a_failed_refresh_keeps_the_last_good_version_with_one_warning(
    tmp_path, clock, monkeypatch, caplog
):
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }}")
    workflow = compiled(tmp_path, uri)
    assert used(run(workflow))[1] == "write_prompt/1"
    db = tmp_path / "mlflow.db"
    db.rename(tmp_path / "away.db")  # the registry is gone
    calls = registry_calls(monkeypatch)
    with caplog.at_level(logging.INFO, logger="configurable_agents.prompts"):
        for _ in range(3):
            clock.advance(registry.ALIAS_TTL_SECONDS)
            assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")
            refreshed()
            assert used(run(workflow))[1] == "write_prompt/1"  # no retry within the TTL
            assert registry.join_refreshes(0)
        warnings = prompt_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "prompts:/write_prompt@production" in warnings[0]
        assert "still running on write_prompt/1" in warnings[0] and "does not exist" in warnings[0]
        ours = [r for r in caplog.records if r.name == "configurable_agents.prompts"]
        assert max(r.levelno for r in ours) == logging.WARNING  # not an error
        assert calls == []  # the store file is checked first: MLflow never created one
        (tmp_path / "away.db").rename(db)
        client(uri).set_prompt_alias("write_prompt", "production", 2)
        clock.advance(registry.ALIAS_TTL_SECONDS)
        run(workflow)
        refreshed()
        assert used(run(workflow)) == ("v2 about bees", "write_prompt/2")
    assert len(prompt_warnings(caplog)) == 1
    assert any("now names write_prompt/2" in r.getMessage() for r in caplog.records)


def test_a_registry_error_during_refresh_is_a_warning_not_a_failed_run(
    tmp_path, clock, monkeypatch, caplog
):
    uri = store(tmp_path, "v1 about {{ topic }}")
    workflow = compiled(tmp_path, uri)

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("registry down")

    monkeypatch.setattr(mlflow.MlflowClient, "load_prompt", broken)
    clock.advance(registry.ALIAS_TTL_SECONDS)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        assert used(run(workflow))[1] == "write_prompt/1"
        refreshed()
        clock.advance(registry.ALIAS_TTL_SECONDS)
        assert used(run(workflow))[1] == "write_prompt/1"
        refreshed()
    (warning,) = prompt_warnings(caplog)
    assert "the registry cannot be read: registry down" in warning


def test_a_new_version_that_does_not_fit_the_state_is_not_used(
    tmp_path, clock, monkeypatch, caplog
):
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }} for {{ reader }}")
    workflow = compiled(tmp_path, uri)
    client(uri).set_prompt_alias("write_prompt", "production", 2)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        for _ in range(2):
            clock.advance(registry.ALIAS_TTL_SECONDS)
            assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")
            refreshed()
            assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")
    (warning,) = prompt_warnings(caplog)
    assert "write_prompt/2 reads {{ reader }}, which is not a state field" in warning
    assert "still running on write_prompt/1" in warning


def test_an_alias_missing_at_compile_time_is_picked_up_later(tmp_path, clock, caplog):
    uri = store(tmp_path)
    client(uri).register_prompt(name="write_prompt", template="v1 about {{ topic }}")
    node = ALIAS_REF + '    prompt: "Inline {topic}"\n'
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        workflow = compiled(tmp_path, uri, node)  # no alias yet: the fallback, one warning
        assert used(run(workflow)) == ("Inline bees", None)
        client(uri).set_prompt_alias("write_prompt", "production", 1)
        assert used(run(workflow)) == ("Inline bees", None)
        clock.advance(registry.ALIAS_TTL_SECONDS)
        assert used(run(workflow)) == ("Inline bees", None)  # starts the refresh
        refreshed()
        assert used(run(workflow)) == ("v1 about bees", "write_prompt/1")
    assert len(prompt_warnings(caplog)) == 1


def test_the_ttl_comes_from_the_environment(tmp_path, clock, monkeypatch, caplog):
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }}")
    monkeypatch.setenv("CA_PROMPT_ALIAS_TTL", "0")  # every run asks
    workflow = compiled(tmp_path, uri)
    assert used(run(workflow))[1] == "write_prompt/1"
    client(uri).set_prompt_alias("write_prompt", "production", 2)
    assert used(run(workflow))[1] == "write_prompt/2"
    monkeypatch.setenv("CA_PROMPT_ALIAS_TTL", "5")
    assert registry.alias_ttl() == 5.0
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        for bad in ("soon", "-1", "inf"):
            monkeypatch.setenv("CA_PROMPT_ALIAS_TTL", bad)
            assert registry.alias_ttl() == registry.ALIAS_TTL_SECONDS
            assert registry.alias_ttl() == registry.ALIAS_TTL_SECONDS
    warnings = prompt_warnings(caplog)
    assert len(warnings) == 3 and "CA_PROMPT_ALIAS_TTL='soon'" in warnings[0]


def test_serve_follows_the_alias(tmp_path, clock, monkeypatch):
    """``serve`` compiles the workflow once; its runs follow the alias all the same."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from configurable_agents.observe.metrics import recorder as metrics
    from configurable_agents.serve.app import create_app

    monkeypatch.setattr(metrics, "_metrics", metrics.Metrics())  # create_app enables them
    monkeypatch.setattr(metrics, "_enabled", False)
    uri = store(tmp_path, "v1 about {{ topic }}", "v2 about {{ topic }}")
    workflow = compiled(tmp_path, uri)
    with TestClient(create_app(workflow, database_url=f"sqlite:///{tmp_path / 'runs.db'}")) as http:

        def version() -> str:
            response = http.post("/runs", json={"inputs": {"topic": "bees"}})
            assert response.status_code == 200, response.text
            return str(response.json()["nodes"][0]["prompt_version"])

        assert version() == "write_prompt/1"
        client(uri).set_prompt_alias("write_prompt", "production", 2)
        assert version() == "write_prompt/1"
        clock.advance(registry.ALIAS_TTL_SECONDS)
        assert version() == "write_prompt/1"  # this run starts the refresh, without waiting
        refreshed()
        assert version() == "write_prompt/2"


def test_with_a_ttl_of_0_a_failing_refresh_is_a_warning_not_a_failed_run(
    tmp_path, clock, monkeypatch, caplog
):
    """Every run asks (TTL 0) and the refresh itself breaks (not the registry's answer): the
    run goes on on the version it has, with a one-line warning and no traceback."""
    uri = store(tmp_path, "v1 about {{ topic }}")
    monkeypatch.setenv("CA_PROMPT_ALIAS_TTL", "0")
    workflow = compiled(tmp_path, uri)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("refresh broke")

    monkeypatch.setattr(registry, "lookup", broken)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        assert used(run(workflow))[1] == "write_prompt/1"
    (warning,) = prompt_warnings(caplog)
    assert "refresh broke" in warning
    assert all(r.exc_info is None for r in caplog.records)


def test_a_store_that_cannot_be_opened_runs_on_the_fallback_prompt(tmp_path, clock, monkeypatch):
    """Building MLflow's client fails (a database that is down): the registry is unreadable,
    so a node with an inline prompt runs on it, as for any other registry failure."""
    uri = store(tmp_path, "v1 about {{ topic }}")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("could not connect to server")

    monkeypatch.setattr(mlflow, "MlflowClient", down)
    workflow = compiled(tmp_path, uri, ALIAS_REF + '    prompt: "Inline {topic}"\n')
    assert used(run(workflow)) == ("Inline bees", None)


def test_no_thread_per_visit_while_another_source_refreshes_the_alias(tmp_path, clock, monkeypatch):
    """Two nodes on one alias and a slow registry: while one node's refresh is in flight, the
    other node's visits start no thread of their own (each would only wait behind it)."""
    uri = store(tmp_path, "v1 about {{ topic }}")
    source = compiled(tmp_path, uri).nodes["write"].prompt_source
    key = (uri, source.ref.uri)
    clock.advance(registry.ALIAS_TTL_SECONDS)
    started: list[Any] = []
    monkeypatch.setattr(registry.threading.Thread, "start", lambda self: started.append(self))
    with registry._lock:
        registry._refreshing.add(key)  # another source's refresh of this alias is in flight
    try:
        for _ in range(5):
            assert source.current()[1] == "write_prompt/1"
    finally:
        with registry._lock:
            registry._refreshing.discard(key)
    assert started == []
    source.current()  # nobody else asks now: this visit starts the refresh
    assert len(started) == 1

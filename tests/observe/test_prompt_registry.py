"""Node prompts from the MLflow Prompt Registry (``prompt_ref``): loading by version and by
alias, the fallback ``prompt``, the missing-prompt error before any model call, validation of
the registry's placeholders with the ``prompt_ref``'s line, and the trace linked to the
version (MLflow's ``mlflow.linkedPrompts`` tag and trace↔prompt-version association) on
SQLite and on an ``mlflow server``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.exceptions import WorkflowValidationError
from configurable_agents.prompts import PromptRegistryError, clear_cache, parse_registry_template
from configurable_agents.providers.test import TestChatModel

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: registry_demo}}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses: {{write: [{{text: "Bees dance."}}]}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "{uri}", experiment_name: reg, async_logging: false}}
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


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def client(uri: str) -> Any:
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(uri: str, name: str, template: str) -> Any:
    return client(uri).register_prompt(name=name, template=template)


def sqlite_store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # creates the store's tables
    return uri


def write(tmp_path: Path, uri: str, node: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.format(uri=uri, node=node), encoding="utf-8")
    return path


def record_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = TestChatModel._generate

    def spy(self: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(messages)
        return original(self, messages, *args, **kwargs)

    monkeypatch.setattr(TestChatModel, "_generate", spy)
    return calls


def run(path: Path, topic: str = "bees") -> Any:
    result = ca.run_workflow(path, {"topic": topic})
    assert result.succeeded, result.error
    assert ca.flush(60)
    return result


def test_a_node_runs_on_the_registered_version_and_its_trace_is_linked(tmp_path, monkeypatch):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "Write one line about {{ topic }}.")
    register(uri, "write_prompt", "Write two lines about {{topic}}, please.")
    calls = record_calls(monkeypatch)
    path = write(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 2}\n")
    result = run(path)
    assert result.nodes[0].prompt == "Write two lines about bees, please."
    assert result.nodes[0].prompt_version == "write_prompt/2"
    assert result.to_dict()["nodes"][0]["prompt_version"] == "write_prompt/2"  # run --json
    assert len(calls) == 1
    trace = client(uri).get_trace(result.trace_id)
    assert json.loads(trace.info.tags["mlflow.linkedPrompts"]) == [
        {"name": "write_prompt", "version": "2"}
    ]
    node = next(s for s in trace.data.spans if s.name == "write")
    assert node.attributes["node.prompt_version"] == "write_prompt/2"
    # MLflow's own search by prompt reads the trace <-> prompt-version association rows.
    experiment = client(uri).get_experiment_by_name("reg").experiment_id
    found = client(uri).search_traces([experiment], filter_string='prompt = "write_prompt/2"')
    assert [t.info.trace_id for t in found] == [result.trace_id]
    assert not client(uri).search_traces([experiment], filter_string='prompt = "write_prompt/1"')


def test_an_alias_is_followed(tmp_path):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "v1 {{ topic }}")
    register(uri, "write_prompt", "v2 {{ topic }}")
    client(uri).set_prompt_alias("write_prompt", "production", 1)
    path = write(tmp_path, uri, "    prompt_ref: {name: write_prompt, alias: production}\n")
    result = run(path)
    assert result.nodes[0].prompt == "v1 bees"
    assert result.nodes[0].prompt_version == "write_prompt/1"


def test_loaded_versions_are_cached_per_process(tmp_path, monkeypatch):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "About {{ topic }}.")
    path = write(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    ca.compile_workflow(ca.load_workflow(path))
    loads: list[str] = []
    original = mlflow.MlflowClient.load_prompt
    monkeypatch.setattr(
        mlflow.MlflowClient,
        "load_prompt",
        lambda self, *a, **k: loads.append(a[0]) or original(self, *a, **k),
    )
    compiled = ca.compile_workflow(ca.load_workflow(path))
    assert loads == []
    assert compiled.nodes["write"].prompt_version == "write_prompt/1"


def test_a_missing_version_with_a_fallback_runs_on_the_inline_prompt_with_one_warning(
    tmp_path, caplog
):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "About {{ topic }}.")
    node = '    prompt_ref: {name: write_prompt, version: 7}\n    prompt: "Inline {topic}"\n'
    path = write(tmp_path, uri, node)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        first = run(path)
        run(path)
    assert first.nodes[0].prompt == "Inline bees"
    assert first.nodes[0].prompt_version is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "configurable_agents.prompts"]
    assert len(warnings) == 1, warnings
    assert "prompts:/write_prompt/7" in warnings[0] and "no version 7" in warnings[0]
    trace = client(uri).get_trace(first.trace_id)
    assert "mlflow.linkedPrompts" not in trace.info.tags


def test_an_unreachable_registry_with_a_fallback_runs_on_the_inline_prompt(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    node = '    prompt_ref: {name: write_prompt, alias: production}\n    prompt: "Inline {topic}"\n'
    path = write(tmp_path, uri, node)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.prompts"):
        compiled = ca.compile_workflow(ca.load_workflow(path))
    assert compiled.nodes["write"].prompt_version is None
    assert compiled.nodes["write"].template.render({"topic": "x"}) == "Inline x"
    assert not (tmp_path / "absent.db").exists()  # loading never creates a store
    assert any("does not exist" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("{name: write_prompt, version: 9}", "has no version 9"),
        ("{name: nobody, alias: production}", "has no alias 'production'"),
    ],
)
def test_a_missing_prompt_without_fallback_fails_before_any_model_call(
    tmp_path, monkeypatch, ref, reason
):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "About {{ topic }}.")
    calls = record_calls(monkeypatch)
    path = write(tmp_path, uri, f"    prompt_ref: {ref}\n")
    with pytest.raises(PromptRegistryError) as err:
        ca.run_workflow(path, {"topic": "bees"})
    assert calls == []
    (issue,) = err.value.issues
    assert reason in issue.message
    assert issue.line == 16 and issue.file == str(path)
    assert "fallback prompt" in (issue.hint or "")


def test_the_cli_exits_2_on_a_missing_prompt(tmp_path):
    from typer.testing import CliRunner

    from configurable_agents.cli.app import app

    uri = sqlite_store(tmp_path)
    path = write(tmp_path, uri, "    prompt_ref: {name: nothing_here, version: 1}\n")
    for command in (["validate", str(path)], ["run", str(path), "-i", "topic=x"]):
        out = CliRunner().invoke(app, command)
        assert out.exit_code == 2, out.output
        assert "wf.yaml:16" in out.output and "nothing_here" in out.output


def test_registry_placeholders_are_checked_against_the_state_at_the_prompt_refs_line(tmp_path):
    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "About {{ topik }} and {{ a.b }}.")
    path = write(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    with pytest.raises(WorkflowValidationError) as err:
        ca.compile_workflow(ca.load_workflow(path))
    messages = {i.message: i for i in err.value.issues}
    unknown = next(i for m, i in messages.items() if "topik" in m)
    assert "not a state field" in unknown.message and unknown.hint == "did you mean 'topic'?"
    assert unknown.line == 16
    assert any("attribute access" in m for m in messages)


def test_a_node_needs_prompt_or_prompt_ref(tmp_path):
    path = write(tmp_path, "sqlite:///x.db", "    description: nothing to say\n")
    with pytest.raises(WorkflowValidationError) as err:
        ca.load_workflow(path)
    (issue,) = err.value.issues
    assert "neither 'prompt' nor 'prompt_ref'" in issue.message
    assert issue.line == 15 and "prompt_ref:" in (issue.hint or "")


def test_a_prompt_ref_has_version_or_alias(tmp_path):
    path = write(tmp_path, "sqlite:///x.db", "    prompt_ref: {name: p, version: 1, alias: a}\n")
    with pytest.raises(WorkflowValidationError) as err:
        ca.load_workflow(path)
    (issue,) = err.value.issues
    assert "either 'version: <n>' or 'alias: <name>'" in issue.message
    assert issue.line == 16


def test_the_registry_template_syntax():
    template, problems, used = parse_registry_template("A {{ x }} {literal} {{y}} {{ z")
    assert template.render({"x": 1, "y": "two"}) == "A 1 {literal} two {{ z"
    assert [name for name, _ in used] == ["x", "y"]
    assert [p.message for p in problems] == [
        "the registry template has a '{{' that is never closed"
    ]
    _, problems, _ = parse_registry_template("{% if x %}hi{% endif %}")
    assert "Jinja2" in problems[0].message


def test_the_registry_on_an_mlflow_server(tmp_path, mlflow_server):
    register(mlflow_server.url, "server_prompt", "Server says {{ topic }}.")
    client(mlflow_server.url).set_prompt_alias("server_prompt", "production", 1)
    path = write(
        tmp_path, mlflow_server.url, "    prompt_ref: {name: server_prompt, alias: production}\n"
    )
    result = run(path)
    assert result.nodes[0].prompt == "Server says bees."
    trace = client(mlflow_server.url).get_trace(result.trace_id)
    assert json.loads(trace.info.tags["mlflow.linkedPrompts"]) == [
        {"name": "server_prompt", "version": "1"}
    ]
    experiment = client(mlflow_server.url).get_experiment_by_name("reg").experiment_id
    found = client(mlflow_server.url).search_traces(
        [experiment], filter_string='prompt = "server_prompt/1"'
    )
    assert [t.info.trace_id for t in found] == [result.trace_id]
    # the reports' search_traces path on a server
    from configurable_agents.observe.report.prompts import prompt_report
    from configurable_agents.observe.report.reports import cost_report

    (entry,) = prompt_report(mlflow_server.url, experiment="reg").to_dict()["prompts"]
    assert entry["prompt_name"] == "server_prompt"
    assert [(v["version"], v["usage_count"], v["nodes"]) for v in entry["versions"]] == [
        (1, 1, ["write"])
    ]
    (advice,) = cost_report(mlflow_server.url, experiment="reg", recommend=True).recommendations
    assert advice["current_model"] == "gemini-2.5-flash" and advice["suggestions"]
    # a missing version on the server: the same error before any call
    path = write(tmp_path, mlflow_server.url, "    prompt_ref: {name: server_prompt, version: 5}\n")
    with pytest.raises(PromptRegistryError, match="has no version 5"):
        ca.compile_workflow(ca.load_workflow(path))


PUSHED = """\
schema_version: "1.0"
flow: {{name: pushdemo}}
config:
  llm: {{provider: test, model: gemini-2.5-flash}}
  observability: {{mlflow: {{tracking_uri: "{uri}"}}}}
state: {{fields: {{topic: {{type: str}}, a: {{type: str}}, b: {{type: str}}}}}}
nodes:
  - {{id: first, prompt: "About {{topic}} with {{{{braces}}}}.", outputs: [a]}}
  - id: second
    prompt: "Again {{a}}"
    prompt_ref: {{name: shared_second, version: 1}}
    outputs: [b]
edges: [{{from: START, to: first}}, {{from: first, to: second}}, {{from: second, to: END}}]
"""


def test_prompts_push_twice_registers_once_and_prints_the_prompt_refs(tmp_path):
    from typer.testing import CliRunner

    from configurable_agents.cli.app import app

    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    path = tmp_path / "push.yaml"
    path.write_text(PUSHED.format(uri=uri), encoding="utf-8")
    first = CliRunner().invoke(app, ["prompts", "push", str(path)])
    assert first.exit_code == 0, first.output
    assert "2 new version(s), 0 unchanged" in first.output
    assert "prompt_ref: {name: pushdemo.first, version: 1}" in first.output
    assert "prompt_ref: {name: shared_second, version: 1}" in first.output
    stored = client(uri).load_prompt("prompts:/pushdemo.first/1")
    assert stored.template == "About {{ topic }} with {braces}."
    assert stored.tags["node"] == "first"
    again = CliRunner().invoke(app, ["prompts", "push", str(path), "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert [(p["name"], p["version"], p["registered"]) for p in data["prompts"]] == [
        ("pushdemo.first", 1, False),
        ("shared_second", 1, False),
    ]
    assert [v.version for v in client(uri).search_prompt_versions("pushdemo.first")] == [1]
    # the pushed template is what prompt_ref then loads: the same prompt as the inline one
    path.write_text(
        PUSHED.format(uri=uri).replace('    prompt: "Again {a}"\n', ""), encoding="utf-8"
    )
    compiled = ca.compile_workflow(ca.load_workflow(path))
    assert compiled.nodes["second"].template.render({"a": "x"}) == "Again x"
    # a changed prompt: one new version
    path.write_text(PUSHED.format(uri=uri).replace("About", "On"), encoding="utf-8")
    third = CliRunner().invoke(app, ["prompts", "push", str(path)])
    assert "1 new version(s), 1 unchanged" in third.output, third.output
    assert "prompt_ref: {name: pushdemo.first, version: 2}" in third.output
    client(uri).set_prompt_alias("pushdemo.first", "production", 2)
    listing = CliRunner().invoke(app, ["prompts", "list", "--tracking-uri", uri])
    assert listing.exit_code == 0, listing.output
    assert "pushdemo.first  versions: 1, 2  aliases: production→2" in listing.output
    assert "shared_second  versions: 1" in listing.output
    as_json = CliRunner().invoke(app, ["prompts", "list", str(path), "--json"])
    names = [p["name"] for p in json.loads(as_json.output)["prompts"]]
    assert names == ["pushdemo.first", "shared_second"]


def test_prompts_list_of_a_store_that_does_not_exist_is_an_input_error(tmp_path):
    from typer.testing import CliRunner

    from configurable_agents.cli.app import app

    out = CliRunner().invoke(
        app, ["prompts", "list", "--tracking-uri", f"sqlite:///{tmp_path / 'no.db'}"]
    )
    assert out.exit_code == 2 and "no prompt registry" in out.output
    assert not (tmp_path / "no.db").exists()


def test_prompt_ref_is_in_the_json_schema():
    from configurable_agents.config import json_schema

    schema = json_schema()
    node = schema["$defs"]["Node"]
    assert "prompt_ref" in node["properties"] and "prompt" not in node.get("required", [])
    ref = schema["$defs"]["PromptRef"]
    assert set(ref["properties"]) == {"name", "version", "alias"} and ref["required"] == ["name"]


def test_spool_records_without_prompt_versions_still_load(tmp_path):
    """A run spooled by an older version has no ``prompt_version`` on its node records: its
    trace builds, with no prompt link."""
    import pickle

    from configurable_agents.observe.run_record import spool_snapshot
    from configurable_agents.observe.trace.mlflow_entities import to_mlflow
    from configurable_agents.observe.trace.spans import build_trace, linked_prompts

    uri = sqlite_store(tmp_path)
    register(uri, "write_prompt", "About {{ topic }}.")
    path = write(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    compiled = ca.compile_workflow(ca.load_workflow(path))
    result = spool_snapshot(ca.run_workflow(compiled, {"topic": "bees"}, trace=False))
    assert linked_prompts(result) == [{"name": "write_prompt", "version": "1"}]
    for node in result.nodes:
        del node.__dict__["prompt_version"]  # as an older version pickled it
    old = pickle.loads(pickle.dumps(result))
    assert old.nodes[0].prompt_version is None and linked_prompts(old) == []
    ca.summarize_cost(old)
    info, _ = to_mlflow(build_trace(compiled, old), "0", spans=False)
    assert "mlflow.linkedPrompts" not in info.tags


def test_the_registry_and_the_trace_link_on_postgresql(tmp_path, postgres_tracking_uri):
    uri = postgres_tracking_uri
    register(uri, "pg_prompt", "PG says {{ topic }}.")
    path = write(tmp_path, uri, "    prompt_ref: {name: pg_prompt, version: 1}\n")
    result = run(path)
    assert result.nodes[0].prompt == "PG says bees."
    trace = client(uri).get_trace(result.trace_id)
    assert json.loads(trace.info.tags["mlflow.linkedPrompts"]) == [
        {"name": "pg_prompt", "version": "1"}
    ]
    experiment = client(uri).get_experiment_by_name("reg").experiment_id
    found = client(uri).search_traces([experiment], filter_string='prompt = "pg_prompt/1"')
    assert [t.info.trace_id for t in found] == [result.trace_id]
    from configurable_agents.observe.report.prompts import prompt_report

    (entry,) = prompt_report(uri).to_dict()["prompts"]
    assert (entry["prompt_name"], entry["versions"][0]["usage_count"]) == ("pg_prompt", 1)

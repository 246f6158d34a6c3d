"""Issue 10 end to end: one workflow whose node prompt comes from the MLflow Prompt Registry
and whose output is judged (an LLM judge after the run, a code scorer as a gate), run on the
``test`` provider and on the local model; the trace holds the linked prompt version and the
judges' assessments, and ``report quality`` / ``report prompts`` print them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import configurable_agents as ca
from configurable_agents.cli.app import app
from configurable_agents.prompts import clear_cache

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: judged_registry}}
config:
  llm:
{llm}
  execution: {{timeout_seconds: 300, max_retries: 1}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "{uri}", experiment_name: quality}}
state:
  fields:
    topic: {{type: str, required: true}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
    prompt_ref: {{name: article_prompt, alias: production}}
    outputs: [article]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
judges:
  - name: on_topic
    node: write
    instructions: "Rate from 1 to 5 how well {{{{ outputs }}}} stays on {{{{ topic }}}}."
    scale: [1, 5]
    threshold: 3
  - name: no_links
    node: write
    scorer: "configurable_agents.tools.scorers:no_links"
    on_fail: block
"""

TEST_LLM = """\
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "Tide pools hold anemones, crabs and small fish at low tide."}]
      on_topic: [{score: 4, rationale: "about tide pools"}]"""

LOCAL_LLM = """\
    provider: local
    temperature: 0.2
    max_tokens: 120
    seed: 7"""


@pytest.fixture(autouse=True)
def _fresh_registry_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def store_with_prompt(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()  # creates the store's tables
    client.register_prompt(name="article_prompt", template="Write a line about {{ topic }}.")
    version = client.register_prompt(
        name="article_prompt", template="Write three short sentences about {{ topic }}."
    )
    client.set_prompt_alias("article_prompt", alias="production", version=version.version)
    return uri


def run_and_read(tmp_path: Path, llm: str) -> tuple[Any, Any, str]:
    uri = store_with_prompt(tmp_path)
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.format(llm=llm, uri=uri), encoding="utf-8")
    result = ca.run_workflow(path, {"topic": "tide pools"})
    assert result.succeeded, result.error
    assert ca.flush(120)
    trace = mlflow.MlflowClient(tracking_uri=uri).get_trace(result.trace_id)
    return result, trace, uri


def check_trace(result: Any, trace: Any) -> dict[str, Any]:
    assert result.nodes[0].prompt_version == "article_prompt/2"  # the alias's version
    assert result.nodes[0].prompt.startswith("Write three short sentences about tide pools")
    assert json.loads(trace.info.tags["mlflow.linkedPrompts"]) == [
        {"name": "article_prompt", "version": "2"}
    ]
    found = {a.name: a for a in trace.info.assessments}
    assert {"on_topic", "no_links"} <= set(found)
    assert found["no_links"].source.source_type == "CODE"
    assert found["on_topic"].source.source_type == "LLM_JUDGE"
    return found


def check_reports(uri: str) -> None:
    quality = CliRunner().invoke(app, ["report", "quality", "--tracking-uri", uri])
    assert quality.exit_code == 0, quality.output
    assert "on_topic" in quality.output and "no_links" in quality.output
    prompts = CliRunner().invoke(app, ["report", "prompts", "--tracking-uri", uri])
    assert prompts.exit_code == 0, prompts.output
    assert "article_prompt" in prompts.output


def test_a_registry_prompt_and_judges_on_the_test_provider(tmp_path: Path) -> None:
    result, trace, uri = run_and_read(tmp_path, TEST_LLM)
    found = check_trace(result, trace)
    assert found["on_topic"].value == 4 and found["no_links"].value is True
    check_reports(uri)


@pytest.mark.local_model
def test_a_registry_prompt_and_judges_on_the_local_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    result, trace, uri = run_and_read(tmp_path, LOCAL_LLM)
    found = check_trace(result, trace)
    assert found["no_links"].value in (True, False)
    # a 135M judge still answers within the scale (or its verdict records why it could not)
    verdict = found["on_topic"]
    assert verdict.value is None or 1 <= float(verdict.value) <= 5
    check_reports(uri)

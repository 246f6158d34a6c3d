from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MINIMAL = """\
schema_version: "1.0"
flow: {name: demo}
config:
  llm: {provider: test}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
    output_schema:
      fields: [{name: article, type: str}]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


# One node whose first answer is invalid: one retry, then valid (FAILING: no retry, fails).
RETRY = """\
schema_version: "1.0"
flow: {name: retry_demo}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      score: [{value: "not a number"}, {value: 7}]
  execution: {max_retries: 1}
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
FAILING = RETRY.replace("execution: {max_retries: 1}", "execution: {max_retries: 0}")


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write dedented YAML to ``tmp_path/<name>`` and return its path."""

    def write(text: str, name: str = "wf.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_observability(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep traces, stores and the status file of every test out of the repository."""
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(work)
    monkeypatch.setenv("CONFIGURABLE_AGENTS_STATE_DIR", str(work / "state"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # flush() waits for the runs this process spooled: not for other tests' (their spools,
    # whose stores may be down on purpose, are gone with their folders).
    from configurable_agents.observe.dispatch import OBSERVER

    monkeypatch.setattr(OBSERVER, "_records", {})

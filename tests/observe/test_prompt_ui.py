"""The MLflow UI shows the registry prompt a run used, linked on its trace: an ``mlflow server``
on 127.0.0.1 (SQLite store), a run whose node loads its prompt with ``prompt_ref``, the trace
page in headless Chromium. The screenshot is kept in ``test-artifacts/``; with
``CA_UPDATE_SCREENSHOTS=1`` it also replaces ``docs/screenshots/mlflow-ui-linked-prompt.png``:

    CA_UPDATE_SCREENSHOTS=1 pytest tests/observe/test_prompt_ui.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import configurable_agents as ca
from configurable_agents.prompts import clear_cache
from servers import MissingServerBinary, MlflowServer, chromium_dump_dom, skip_unless_ci

mlflow = pytest.importorskip("mlflow")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs" / "screenshots" / "mlflow-ui-linked-prompt.png"

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: article_writer}}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses: {{research: [{{notes: "Bees dance to share where flowers are."}}]}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "{uri}", experiment_name: linked-prompts,
              async_logging: false}}
state:
  fields:
    topic: {{type: str, required: true}}
    notes: {{type: str}}
nodes:
  - id: research
    prompt_ref: {{name: research_prompt, alias: production}}
    prompt: "Research {{topic}}."
    outputs: [notes]
edges:
  - {{from: START, to: research}}
  - {{from: research, to: END}}
"""


def test_the_mlflow_ui_shows_the_linked_prompt(tmp_path: Path, mlflow_server: MlflowServer):
    client = mlflow.MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    client.register_prompt("research_prompt", "Research {{ topic }}.")
    version = client.register_prompt(
        "research_prompt", "You are a research assistant. Research {{ topic }} in three facts."
    )
    client.set_prompt_alias("research_prompt", "production", version.version)
    clear_cache()
    path = tmp_path / "article_writer.yaml"
    path.write_text(WORKFLOW.format(uri=mlflow_server.url), encoding="utf-8")
    result = ca.run_workflow(path, {"topic": "honey bees"})
    assert ca.flush(60) and result.trace_written, result.trace_error
    assert result.nodes[0].prompt_version == f"research_prompt/{version.version}"
    experiment = client.get_experiment_by_name("linked-prompts").experiment_id
    page = (
        f"{mlflow_server.url}/#/experiments/{experiment}/traces"
        f"?selectedEvaluationId={result.trace_id}"
    )
    shot = ARTIFACTS / "mlflow-ui-linked-prompt.png"
    try:
        dom = chromium_dump_dom(page, shot, window_size=(1600, 1000))
    except MissingServerBinary as exc:
        skip_unless_ci(str(exc))
    # the trace header's "linked prompts" button (its popover lists research_prompt/2)
    assert "1 linked prompt" in dom, dom[-3000:]
    assert "workflow_article_writer" in dom and "chat gemini-2.5-flash" in dom
    if os.environ.get("CA_UPDATE_SCREENSHOTS") == "1":
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS)

"""The real local model: Gemma 3 270M through llama.cpp (the default provider)."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from configurable_agents import run_workflow
from configurable_agents.providers.local import ChatLocalLlama, gemma_path, to_llama_messages

pytest.importorskip("llama_cpp", reason='needs: pip install "configurable-agents[local]"')
pytestmark = pytest.mark.local_model

from conftest import EXAMPLES  # noqa: E402
from test_cli import cli  # noqa: E402


def test_example_runs_on_the_local_model_from_the_cli():
    proc = cli(
        "run", EXAMPLES / "article_writer.yaml", "-i", "topic=tide pools", "--json", timeout=600
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["status"] == "succeeded"
    assert [n["node"] for n in data["nodes"]] == ["write", "tag"]
    for node in data["nodes"]:
        assert node["model"] == "gemma-3-270m" and node["provider"] == "local"
        assert node["usage"]["input_tokens"] > 0 and node["usage"]["output_tokens"] > 0
    out = data["outputs"]
    assert isinstance(out["title"], str) and out["title"]
    assert isinstance(out["article"], str) and out["article"]
    assert isinstance(out["tags"], list) and all(isinstance(t, str) for t in out["tags"])


def test_chat_model_reports_usage_and_model_name():
    model = ChatLocalLlama(temperature=0, max_tokens=8, seed=1)
    reply = model.invoke([HumanMessage("Say hello.")])
    assert reply.response_metadata["model_name"] == "gemma-3-270m"
    usage = reply.usage_metadata
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 8
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_structured_output_matches_schema():
    model = ChatLocalLlama(temperature=0, max_tokens=64, seed=1)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = model.with_structured_output(schema, include_raw=True).invoke(
        [HumanMessage("How many legs does a cat have?")]
    )
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"]["n"], int)


def test_model_path_runs_any_gguf_file(write_workflow):
    path = write_workflow(f"""\
        schema_version: "1.0"
        flow: {{name: by_path}}
        config:
          llm: {{provider: local, model_path: "{gemma_path()}", max_tokens: 32, temperature: 0}}
        state:
          fields:
            word: {{type: str, required: true}}
            upper: {{type: str, default: ""}}
        nodes:
          - {{id: up, prompt: "Write the word {{word}} in capitals.", outputs: [upper]}}
        edges: [{{from: START, to: up}}, {{from: up, to: END}}]
    """)
    result = run_workflow(path, {"word": "sea"})
    assert result.succeeded, result.error
    assert result.nodes[0].model == "gemma-3-270m-q4_k_m"  # named after the file


def test_system_messages_are_kept_for_gemma():
    msgs = to_llama_messages([SystemMessage("Be brief."), HumanMessage("Hi")])
    assert msgs == [{"role": "user", "content": "Be brief.\n\nHi"}]

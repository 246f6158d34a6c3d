"""The real local models through llama.cpp: SmolLM2-135M-Instruct (the default) and Gemma."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from configurable_agents import run_workflow
from configurable_agents.providers.local import (
    DEFAULT_MODEL,
    ChatLocalLlama,
    gemma_path,
    set_default_threads,
    shared_llama,
    smollm2_path,
)

pytest.importorskip("llama_cpp", reason='needs: pip install "configurable-agents[local]"')
pytestmark = pytest.mark.local_model

from conftest import EXAMPLES  # noqa: E402
from test_cli import cli  # noqa: E402


def test_example_runs_on_the_default_model_from_the_cli():
    proc = cli(
        "run", EXAMPLES / "article_writer.yaml", "-i", "topic=tide pools", "--json", timeout=600
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["status"] == "succeeded"
    assert [n["node"] for n in data["nodes"]] == ["write", "tag"]
    for node in data["nodes"]:
        assert node["model"] == DEFAULT_MODEL == "smollm2-135m-instruct"
        assert node["provider"] == "local"
        assert node["usage"]["input_tokens"] > 0 and node["usage"]["output_tokens"] > 0
    assert data["nodes"][0]["llm_calls"] >= 2  # per_field: the article, then the title
    out = data["outputs"]
    assert len(out["article"].split()) >= 15 and "tide" in out["article"].lower()
    assert 1 <= len(out["title"].split()) <= 12 and out["title"] != out["article"]
    assert 1 <= len(out["tags"]) <= 5 and all(isinstance(t, str) and t for t in out["tags"])


def test_chat_model_reports_usage_and_model_name():
    model = ChatLocalLlama(temperature=0, max_tokens=8, seed=1)
    reply = model.invoke([HumanMessage("Say hello.")])
    assert reply.response_metadata["model_name"] == DEFAULT_MODEL
    usage = reply.usage_metadata
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 8
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_default_model_uses_the_chat_template_of_its_gguf_file():
    model = ChatLocalLlama(temperature=0, max_tokens=8, seed=1)
    loaded = model.loaded()
    assert model.resolved_path() == smollm2_path()
    assert loaded.llama.chat_format == "chat_template.default"  # not a forced "gemma"
    assert "<|im_start|>" in loaded.llama.metadata["tokenizer.chat_template"]
    assert loaded.system_role  # ChatML renders system messages


def test_system_message_reaches_the_model_as_a_system_turn():
    model = ChatLocalLlama(temperature=0, max_tokens=4, seed=1)
    with_system = model.invoke([SystemMessage("Answer in French."), HumanMessage("Hi")])
    without = model.invoke([HumanMessage("Hi")])
    # SmolLM2's template adds its own (longer) default system prompt when none is given; a
    # system turn of ours replaces it, so the prompt gets shorter. Folded into the user turn,
    # it would get longer.
    assert with_system.usage_metadata["input_tokens"] < without.usage_metadata["input_tokens"]


def test_gemma_by_name_uses_the_gemma_format():
    model = ChatLocalLlama(model_name="gemma-3-270m", temperature=0, max_tokens=8, seed=1)
    loaded = model.loaded()
    assert model.resolved_path() == gemma_path()
    assert loaded.llama.chat_format == "gemma"  # the file has no template
    assert not loaded.system_role  # folded into the first user turn
    reply = model.invoke([SystemMessage("Be brief."), HumanMessage("Say hello.")])
    assert reply.response_metadata["model_name"] == "gemma-3-270m"
    assert reply.usage_metadata["output_tokens"] > 0


def test_chat_format_option_forces_a_format():
    llama, _ = shared_llama(smollm2_path(), chat_format="chatml")
    assert llama.chat_format == "chatml"


def test_processes_sharing_the_cores_load_models_with_their_share(monkeypatch):
    from configurable_agents.providers import local

    monkeypatch.setattr(local, "_shared_threads", None)  # back to one per core afterwards
    set_default_threads(1)  # what a batch worker of -c 2 on two cores sets
    llama, _ = shared_llama(smollm2_path(), seed=4242)  # a seed no other test loads
    assert (llama.n_threads, llama.n_threads_batch) == (1, 1)  # prompt evaluation too
    explicit, _ = shared_llama(smollm2_path(), n_threads=2, seed=4242)  # the workflow's wins
    assert (explicit.n_threads, explicit.n_threads_batch) == (2, 2)


def test_structured_output_matches_schema():
    model = ChatLocalLlama(temperature=0, max_tokens=64, seed=1)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = model.with_structured_output(schema, include_raw=True).invoke(
        [HumanMessage("How many legs does a cat have?")]
    )
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"]["n"], int)


def _workflow(llm: str, structured: str) -> str:
    return f"""\
        schema_version: "1.0"
        flow: {{name: strategies}}
        config:
          llm: {llm}
        state:
          fields:
            topic: {{type: str, required: true}}
            summary: {{type: str, default: ""}}
            count: {{type: int, default: 0}}
        nodes:
          - id: write
            prompt: "Write two sentences about {{topic}}, and say how many sentences you wrote."
            outputs: [summary, count]
            structured: {structured}
            output_schema:
              fields:
                - {{name: summary, type: str, description: two sentences}}
                - {{name: count, type: int, description: the number of sentences}}
        edges: [{{from: START, to: write}}, {{from: write, to: END}}]
    """


def test_per_field_writes_text_fields_as_free_text(write_workflow):
    llm = "{provider: local, temperature: 0, max_tokens: 96, seed: 3}"
    result = run_workflow(write_workflow(_workflow(llm, "per_field")), {"topic": "rain"})
    assert result.succeeded, result.error
    node = result.nodes[0]
    assert node.llm_calls == len(node.calls) >= 2
    text_call, count_call = node.calls[0], node.calls[-1]
    assert not text_call.response.lstrip().startswith("{")  # free text, not JSON
    assert json.loads(count_call.response)["count"] == result.outputs["count"]
    assert all(c.usage.output_tokens > 0 for c in node.calls)
    assert len(result.outputs["summary"].split()) >= 5


def test_json_schema_asks_for_one_object(write_workflow):
    llm = "{provider: local, temperature: 0, max_tokens: 128, seed: 3}"
    result = run_workflow(write_workflow(_workflow(llm, "json_schema")), {"topic": "rain"})
    assert result.succeeded, result.error
    node = result.nodes[0]
    assert node.llm_calls == node.retries + 1
    assert set(json.loads(node.calls[-1].response)) == {"summary", "count"}


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


@pytest.mark.parametrize("structured", ["per_field", "json_schema"])
def test_declared_list_size_is_what_the_grammar_returns(write_workflow, structured):
    """min_items = max_items = 3 on the output field: exactly three items, even when the prompt
    asks for five (the grammar has the last word; the model's default would be 1-5)."""
    path = write_workflow(f"""\
        schema_version: "1.0"
        flow: {{name: sized}}
        config:
          llm: {{provider: local, temperature: 0.2, max_tokens: 96, seed: 7}}
          execution: {{max_retries: 0}}
        state:
          fields:
            what: {{type: str, required: true}}
            items: {{type: "list[str]", default: []}}
        nodes:
          - id: ask
            prompt: "List 5 {{what}}."
            structured: {structured}
            outputs: [items]
            output_schema:
              fields:
                - {{name: items, type: "list[str]", min_items: 3, max_items: 3}}
        edges: [{{from: START, to: ask}}, {{from: ask, to: END}}]
    """)
    for what in ("fruits", "colours"):
        result = run_workflow(path, {"what": what}, trace=False)
        assert result.succeeded, result.error
        assert len(result.outputs["items"]) == 3, result.outputs
        assert result.nodes[0].retries == 0
        assert len(json.loads(result.nodes[0].calls[-1].response)["items"]) == 3

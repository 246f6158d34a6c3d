"""The executor on the `test` provider: linear runs, loops, retries, limits, tools, inputs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from configurable_agents import (
    InputError,
    MaxStepsExceededError,
    NodeTimeoutError,
    OutputValidationError,
    ProviderError,
    compile_workflow,
    load_workflow,
    run_workflow,
)
from configurable_agents.providers.test import TestChatModel

from conftest import EXAMPLES, MINIMAL


class Recorder(BaseCallbackHandler):
    """Keeps the messages of every chat-model call."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.calls.append(messages[0])


LOOP = """\
schema_version: "1.0"
flow: {name: loop}
config:
  llm:
    provider: test
    responses:
      review: RESPONSES
  execution: {max_retries: RETRIES, max_steps: STEPS}
state:
  fields:
    topic: {type: str, required: true}
    draft: {type: str, default: ""}
    score: {type: int, default: 0}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [draft]
  - id: review
    prompt: "Score: {draft}"
    outputs: [score]
    output_schema: {fields: [{name: score, type: int}]}
edges:
  - {from: START, to: write}
  - {from: write, to: review}
  - from: review
    routes:
      - {when: "score >= 7", to: END}
      - {default: true, to: write}
"""


def loop_file(write_workflow, responses: list[Any], retries: int = 0, steps: int = 20):
    text = (
        LOOP.replace("RESPONSES", json.dumps(responses))
        .replace("RETRIES", str(retries))
        .replace("STEPS", str(steps))
    )
    return write_workflow(text)


def test_linear_run_outputs_and_exact_token_usage(write_workflow):
    result = run_workflow(write_workflow(MINIMAL), {"topic": "bees"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"article": "test article"}
    assert result.state == {"topic": "bees", "article": "test article"}
    [node] = result.nodes
    # input = words of the rendered prompt "Write about bees." (3);
    # output = words of the JSON '{"article": "test article"}' (3)
    assert (node.usage.input_tokens, node.usage.output_tokens) == (3, 3)
    assert result.usage.total_tokens == 6
    assert node.prompt == "Write about bees."
    assert node.model == "test" and node.provider == "test"
    assert node.duration_ms > 0 and result.duration_ms >= node.duration_ms


def test_loop_follows_routes_until_condition(write_workflow):
    result = run_workflow(
        loop_file(write_workflow, [{"score": 3}, {"score": 5}, {"score": 9}]), {"topic": "x"}
    )
    assert result.succeeded
    assert [(n.node, n.visit) for n in result.nodes] == [
        ("write", 0),
        ("review", 0),
        ("write", 1),
        ("review", 1),
        ("write", 2),
        ("review", 2),
    ]
    assert result.outputs["score"] == 9


def test_canned_responses_restart_for_each_run_of_a_compiled_workflow(write_workflow):
    compiled = compile_workflow(
        load_workflow(loop_file(write_workflow, [{"score": 1}, {"score": 8}]))
    )
    first = run_workflow(compiled, {"topic": "a"})
    second = run_workflow(compiled, {"topic": "b"})
    assert len(first.nodes) == len(second.nodes) == 4
    assert second.state["topic"] == "b"


def test_invalid_output_is_retried_with_the_error_fed_back(write_workflow):
    recorder = Recorder()
    path = loop_file(write_workflow, [{"score": "high"}, {"score": 9}], retries=2)
    result = run_workflow(path, {"topic": "x"}, callbacks=[recorder])
    assert result.succeeded
    review = result.nodes[1]
    assert review.retries == 1 and review.llm_calls == 2
    assert "score" in review.validation_errors[0] and "integer" in review.validation_errors[0]
    feedback = recorder.calls[2][-1].content  # third model call: review's retry
    assert "It is invalid" in feedback and "score" in feedback and '"high"' in feedback


def test_output_still_invalid_after_retries_fails_the_run(write_workflow):
    result = run_workflow(loop_file(write_workflow, [{"score": "bad"}], retries=2), {"topic": "x"})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "OutputValidationError" and result.error.node == "review"
    assert "3 time(s)" in result.error.message
    assert result.nodes[-1].status == "failed" and result.nodes[-1].llm_calls == 3
    assert result.state["draft"] == "test draft"  # last known state is kept
    with pytest.raises(OutputValidationError):
        result.raise_for_status()


def test_max_steps_stops_an_endless_loop(write_workflow):
    result = run_workflow(loop_file(write_workflow, [{"score": 1}], steps=6), {"topic": "x"})
    assert result.status == "failed"
    assert isinstance(result.exception, MaxStepsExceededError)
    assert "max_steps=6" in result.error.message
    assert len(result.nodes) == 6


def test_node_timeout(write_workflow):
    path = write_workflow(
        MINIMAL.replace(
            "    outputs: [article]",
            "    outputs: [article]\n    tools: ['sample_tools:slow']\n    timeout_seconds: 0.3",
        )
    )
    started = time.perf_counter()
    result = run_workflow(path, {"topic": "x"})
    assert time.perf_counter() - started < 4  # the tool sleeps 5 s
    assert isinstance(result.exception, NodeTimeoutError)
    assert "within 0.3 s" in result.error.message and result.error.node == "write"


def test_tools_are_called_and_recorded():
    result = run_workflow(EXAMPLES / "calculator_tools.yaml", {"question": "2+2?"})
    assert result.succeeded
    [node] = result.nodes
    calls = {c.name: c for c in node.tool_calls}
    assert calls["calculator"].args == {"expression": "2 + 2"}
    assert calls["calculator"].result == "4"
    assert calls["current_time"].result.startswith("20")
    assert node.llm_calls == 3  # tool-call turn, answer turn, structured output


def test_user_tool_and_failing_tool(write_workflow):
    path = write_workflow(
        MINIMAL.replace(
            "    outputs: [article]",
            "    outputs: [article]\n    tools: ['sample_tools:shout', 'sample_tools:broken']",
        )
    )
    result = run_workflow(path, {"topic": "x"})
    assert result.succeeded  # a tool's failure goes back to the model, it does not fail the run
    calls = {c.name: c for c in result.nodes[0].tool_calls}
    assert calls["shout"].result == "TEST TEXT"
    assert calls["broken"].error and "tool exploded" in calls["broken"].result


def test_provider_failure_is_a_failed_run(write_workflow, monkeypatch):
    def boom(self, messages, stop=None, run_manager=None, **kwargs):
        raise ConnectionError("service unavailable")

    monkeypatch.setattr(TestChatModel, "_generate", boom)
    no_retry = MINIMAL.replace(
        "  llm: {provider: test}", "  llm: {provider: test}\n  execution: {retry: {attempts: 1}}"
    )
    result = run_workflow(write_workflow(no_retry), {"topic": "x"})
    assert isinstance(result.exception, ProviderError)
    assert "ConnectionError: service unavailable" in result.error.message
    [call] = result.nodes[0].calls  # the failed call is on the record
    assert call.error == "ConnectionError: service unavailable"
    assert call.transient_error == "connection" and call.failed


def test_per_node_llm_override(write_workflow):
    text = MINIMAL.replace(
        "    outputs: [article]", "    outputs: [article]\n    llm: {model: gpt-4o}"
    )
    result = run_workflow(write_workflow(text), {"topic": "x"})
    assert result.nodes[0].model == "gpt-4o"


def test_state_values_are_not_reexpanded_as_templates(write_workflow):
    result = run_workflow(write_workflow(MINIMAL), {"topic": "{article} {{x}} {topic.__class__}"})
    assert result.nodes[0].prompt == "Write about {article} {{x}} {topic.__class__}."


TYPED = """\
schema_version: "1.0"
flow: {name: typed}
config: {llm: {provider: test}}
state:
  fields:
    name: {type: str, required: true}
    n: {type: int, required: true}
    ratio: {type: float, default: 0.5}
    flag: {type: bool, default: false}
    tags: {type: "list[str]", default: []}
    meta: {type: "dict[str, int]", default: {}}
    out: {type: str, default: ""}
nodes:
  - id: go
    prompt: "{name} {n} {ratio} {flag} {tags} {meta}"
    outputs: [out]
edges: [{from: START, to: go}, {from: go, to: END}]
"""


def test_inputs_are_coerced_by_declared_type(write_workflow):
    result = run_workflow(
        write_workflow(TYPED),
        {
            "name": "7",
            "n": "3",
            "ratio": "1.5",
            "flag": "yes",
            "tags": '["a", "b"]',
            "meta": '{"k": 2}',
        },
    )
    assert result.succeeded
    assert result.state["n"] == 3 and result.state["ratio"] == 1.5 and result.state["flag"] is True
    assert result.state["tags"] == ["a", "b"] and result.state["meta"] == {"k": 2}
    assert result.state["name"] == "7"
    assert result.nodes[0].prompt == '7 3 1.5 true ["a", "b"] {"k": 2}'


def test_bad_inputs_are_all_reported_before_any_call(write_workflow, monkeypatch):
    monkeypatch.setattr(TestChatModel, "_generate", lambda *a, **k: pytest.fail("model called"))
    with pytest.raises(InputError) as info:
        run_workflow(
            write_workflow(TYPED), {"n": "three", "flag": "maybe", "tags": "[1,", "nmae": "x"}
        )
    text = str(info.value)
    assert "input 'n': 'three' is not a whole number (int)" in text
    assert "input 'flag': 'maybe' is not true or false (bool)" in text
    assert "input 'tags': '[1,' is not valid JSON for a list[str]" in text
    assert "input 'nmae' is not a state field" in text and "did you mean 'name'?" in text
    assert "required input 'name' is missing" in text
    assert len(info.value.issues) == 5


def test_missing_required_input(write_workflow):
    with pytest.raises(InputError, match="required input 'topic' is missing"):
        run_workflow(write_workflow(MINIMAL), {})


def test_events_fire_for_each_node(write_workflow):
    events: list[tuple[str, str]] = []
    run_workflow(
        write_workflow(MINIMAL),
        {"topic": "x"},
        on_event=lambda kind, rec: events.append((kind, rec.node)),
    )
    assert events == [("node_start", "write"), ("node_end", "write")]

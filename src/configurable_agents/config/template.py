"""Prompt templates: ``{field}`` inserts a state field, ``{{`` and ``}}`` are literal braces.

Nothing else is allowed inside braces (no ``{a.b}``, ``{a[0]}``, ``{a!r}``, ``{a:>9}``), and a
template is never passed to ``str.format``: it is split once into literal text and field names,
and rendering only joins strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TemplateProblem:
    message: str
    hint: str
    offset: int  # character offset in the template, for the line number


@dataclass(frozen=True)
class Template:
    """A parsed template: alternating literal text and field names."""

    parts: tuple[str, ...]  # literal, name, literal, name, ..., literal

    @property
    def fields(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def render(self, values: dict[str, Any]) -> str:
        out = []
        for i, part in enumerate(self.parts):
            out.append(part if i % 2 == 0 else _as_text(values.get(part)))
        return "".join(out)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value, ensure_ascii=False, default=_jsonable)
    return str(value)


def _jsonable(value: Any) -> Any:
    """For json.dumps: nested pydantic models (list[object] fields) and anything else."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return str(value)


def parse_template(text: str) -> tuple[Template, list[TemplateProblem], list[tuple[str, int]]]:
    """Split ``text``; return the template, its problems, and each ``(field, offset)`` used."""
    parts: list[str] = []
    problems: list[TemplateProblem] = []
    used: list[tuple[str, int]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "{":
            end = text.find("}", i + 1)
            nxt = text.find("{", i + 1)
            if end == -1 or (nxt != -1 and nxt < end):
                problems.append(
                    TemplateProblem(
                        "prompt has a '{' that is never closed",
                        "write {{ for a literal '{', or close the placeholder: {field}",
                        i,
                    )
                )
                literal.append("{")
                i += 1
                continue
            inner = text[i + 1 : end]
            name = inner.strip()
            if _NAME.fullmatch(name):
                parts.append("".join(literal))
                literal = []
                parts.append(name)
                used.append((name, i))
            else:
                problems.append(_bad_placeholder(inner, i))
            i = end + 1
        elif ch == "}":
            problems.append(
                TemplateProblem(
                    "prompt has a '}' with no matching '{'",
                    "write }} for a literal '}'",
                    i,
                )
            )
            literal.append("}")
            i += 1
        else:
            j = i
            while j < n and text[j] not in "{}":
                j += 1
            literal.append(text[i:j])
            i = j
    parts.append("".join(literal))
    return Template(tuple(parts)), problems, used


def _bad_placeholder(inner: str, offset: int) -> TemplateProblem:
    shown = "{" + inner + "}"
    base = _NAME.match(inner.strip())
    field = base.group(0) if base else None
    rest = inner.strip()[len(field) :] if field else inner
    if field and rest.startswith("."):
        what = "attribute access"
    elif field and rest.startswith("["):
        what = "index access"
    elif field and rest[:1] in ("!", ":"):
        what = "a format conversion or spec"
    elif not inner.strip():
        what = "an empty placeholder"
    else:
        what = "an expression"
    hint = (
        f"placeholders insert a whole state field, like {{{field}}}; "
        "compute parts in an earlier node, or write {{ and }} for literal braces"
        if field
        else "placeholders are {field_name}; write {{ and }} for literal braces (e.g. JSON)"
    )
    return TemplateProblem(
        f"placeholder {shown} uses {what}; only {{field}} is allowed", hint, offset
    )

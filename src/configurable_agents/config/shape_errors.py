"""Shape errors from pydantic, reworded: a readable place (``node 'review' prompt``, not
``nodes.1.prompt``), the line, and a fix (the key it misspells, the keys allowed there, an
example of the value expected)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from .collector import Collector, did_you_mean
from .schema import Workflow

__all__ = ["pydantic_issue", "typo_keys"]


def typo_keys(errors: list[Any]) -> set[tuple[str | int, ...]]:
    """Paths of required keys that are missing only because an unknown key misspells them."""
    found = set()
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc:
            close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), 1, 0.6)
            if close:
                found.add((*loc[:-1], close[0]))
    return found


def pydantic_issue(col: Collector, err: Any) -> None:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    where = _describe(loc, col.doc.data)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        hint = did_you_mean(key, allowed)
        if not hint and allowed:
            hint = "allowed keys here: " + ", ".join(allowed)
        col.add(loc, f"unknown key '{key}' in {_describe(loc[:-1], col.doc.data)}", hint)
    elif kind == "missing":
        parent = _describe(loc[:-1], col.doc.data)
        col.add(
            loc[:-1],
            f"{parent}: required key '{loc[-1]}' is missing",
            _MISSING_HINTS.get(str(loc[-1]), f"add '{loc[-1]}:'"),
        )
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        col.add(loc, f"{where}: {err['input']!r} is not allowed", f"use one of {expected}")
    elif kind == "string_pattern_mismatch":
        col.add(
            loc,
            f"{where}: {err['input']!r} is not a valid name",
            "use letters, digits and underscores, starting with a letter",
        )
    elif kind in ("value_error", "assertion_error"):
        error = err.get("ctx", {}).get("error", err["msg"])
        msg = str(error)
        # A message that already names its key ("schema_version '2.0' is ...") needs no prefix.
        text = msg if len(loc) == 1 and msg.startswith(f"{loc[0]} ") else f"{where}: {msg}"
        col.add(loc, text, getattr(error, "hint", None) or _value_hint(msg))
    else:
        shown = err.get("input")
        got = f" (got {shown!r})" if not isinstance(shown, (dict, list)) else ""
        col.add(
            loc,
            f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}{got}",
            _type_hint(kind, str(loc[-1]) if loc else "", err.get("ctx") or {})
            or "see the file format (configurable-agents schema prints it)",
        )


def _type_hint(kind: str, key: str, ctx: dict[str, Any]) -> str | None:
    """A fix for a value of the wrong type or out of range, from pydantic's error kind."""
    if kind.startswith("int_"):
        return f"write a whole number without quotes, e.g. {key}: 25"
    if kind == "finite_number":
        return f"write a finite number, e.g. {key}: 10"
    if kind.startswith("float_"):
        return f"write a number without quotes, e.g. {key}: 0.5"
    if kind.startswith("bool_"):
        return f"write {key}: true or {key}: false"
    if kind.startswith("string_too_short"):
        return f"{key} cannot be empty"
    if kind.startswith("string_"):
        return f'write text; quote it if it looks like a number: {key}: "..."'
    if kind.startswith("list_") or kind == "too_short":
        return f"write a list, e.g. {key}: [a, b]" + (
            f" with at least {ctx['min_length']} item(s)" if "min_length" in ctx else ""
        )
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"write a mapping, e.g. {key}: {{name: value}}"
    bounds = {
        "greater_than": ("gt", "above"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "below"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds and bounds[kind][0] in ctx:
        limit = ctx[bounds[kind][0]]
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"use a value {bounds[kind][1]} {limit}"
    return None


_MISSING_HINTS = {
    "schema_version": 'add schema_version: "1.0" at the top',
    "flow": "add flow: {name: my_workflow}",
    "state": "add state: {fields: {topic: {type: str, required: true}}}",
    "nodes": "add a nodes: list with at least one node",
    "edges": "add edges, starting with {from: START, to: <first node>}",
    "prompt": 'add prompt: "...{field}..."',
    "outputs": "add outputs: [<state field>]",
    "type": "add type: str (or int, float, bool, list[T], dict[str, T], object)",
    "from": "add from: <node id or START>",
    "to": "add to: <node id or END>",
}


def _value_hint(msg: str) -> str | None:
    if "this version reads" in msg:
        return 'write schema_version: "1.0"'
    if "a route has either" in msg:
        return (
            'write {when: "score >= 7", to: <node>} or, as the last route, '
            "{default: true, to: <node>}"
        )
    if "an edge has either" in msg:
        return "write {from: a, to: b}, or {from: a, routes: [...]} to branch"
    return None


def _describe(loc: Iterable[str | int], data: Any) -> str:
    """A readable name for a path: ``node 'review' prompt`` rather than ``nodes.1.prompt``."""
    loc = tuple(loc)
    if not loc:
        return "the workflow"
    parts: list[str] = []
    value = data
    i = 0
    while i < len(loc):
        key = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if key in ("nodes", "edges") and isinstance(nxt, int):
            seq = value.get(key) if isinstance(value, dict) else None
            item = seq[nxt] if isinstance(seq, list) and _has(seq, nxt) else None
            if key == "nodes":
                label = (
                    f"node '{item['id']}'"
                    if isinstance(item, dict) and "id" in item
                    else f"nodes[{nxt}]"
                )
            else:
                label = (
                    f"edge from '{item['from']}'"
                    if isinstance(item, dict) and "from" in item
                    else f"edges[{nxt}]"
                )
            parts.append(label)
            value = item
            i += 2
            continue
        if key == "fields" and parts and parts[-1] == "state" and nxt is not None:
            parts[-1] = f"state field '{nxt}'"
            value = value.get("fields", {}).get(nxt) if isinstance(value, dict) else None
            i += 2
            continue
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif parts and not parts[-1].endswith("'"):  # after a plain key: config.llm
            parts.append(f".{key}")
        else:
            parts.append(f" {key}" if parts else str(key))
        value = _child(value, key)
        i += 1
    return "".join(
        p if p.startswith(("[", ".", " ")) or not j else " " + p for j, p in enumerate(parts)
    )


def _has(seq: Any, index: int) -> bool:
    return isinstance(seq, list) and 0 <= index < len(seq)


def _child(value: Any, key: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, list) and isinstance(key, int) and _has(value, key):
        return value[key]
    return None


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Keys a mapping at ``loc`` may have, read from the pydantic models."""
    annotation: Any = Workflow
    for key in loc:
        annotation = _unwrap(annotation, key)
        if annotation is None:
            return []
    model = _model_in(annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _unwrap(annotation: Any, key: str | int) -> Any:
    model = _model_in(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap(arg, key)
    if origin is list and isinstance(key, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if model is not None and isinstance(key, str):
        for name, f in model.model_fields.items():
            if key in (name, f.alias):
                return f.annotation
    return None

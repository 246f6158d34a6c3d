"""Run inputs: ``--input key=value`` strings and JSON values, checked against state types."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config.schema import Workflow
from ..config.types import TypeRef, type_adapter
from ..exceptions import InputError, Issue

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["topic=AI", "n=3"]`` → ``{"topic": "AI", "n": "3"}``."""
    out: dict[str, str] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(
                Issue(f"--input {pair!r} is not key=value", hint="write --input topic='AI safety'")
            )
            continue
        out[key.strip()] = value
    if problems:
        raise InputError(problems)
    return out


def read_input_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON object of inputs (``--input-file``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(Issue("input file not found", file=str(path))) from None
    except IsADirectoryError:
        raise InputError(Issue("input file is a directory", file=str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(Issue(f"cannot read input file: {exc}", file=str(path))) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            Issue(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno, hint="fix the JSON")
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            Issue(
                "the input file must hold one JSON object",
                file=str(path),
                hint='e.g. {"topic": "AI safety"}',
            )
        )
    return data


def coerce_inputs(
    raw: Mapping[str, Any], spec: Workflow, types: Mapping[str, TypeRef]
) -> dict[str, Any]:
    """Check and convert inputs; every problem is reported at once in one ``InputError``.

    Strings (from the command line) are converted by the field's type: int/float/bool by
    value, list/dict/object as JSON. Other values must already fit the type.
    """
    issues: list[Issue] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            issues.append(
                Issue(
                    f"input '{key}' is not a state field",
                    hint=f"did you mean '{close[0]}'?"
                    if close
                    else "state fields are: " + ", ".join(types),
                )
            )
            continue
        try:
            values[key] = _convert(value, types[key])
        except ValueError as exc:
            issues.append(Issue(f"input '{key}': {exc}", hint=_hint(types[key])))
    missing = [name for name, f in spec.state.fields.items() if f.required and name not in values]
    for name in missing:
        if name not in raw:
            issues.append(
                Issue(f"required input '{name}' is missing", hint=f"pass --input {name}=...")
            )
    if issues:
        raise InputError(issues)
    return values


def _hint(tref: TypeRef) -> str:
    return {
        "int": "give a whole number, e.g. 3",
        "float": "give a number, e.g. 0.5",
        "bool": "give true or false",
        "list": 'give a JSON list, e.g. ["a", "b"]',
        "dict": 'give a JSON object, e.g. {"k": "v"}',
        "object": 'give a JSON object, e.g. {"k": "v"}',
    }.get(tref.kind, "give text")


def _convert(value: Any, tref: TypeRef) -> Any:
    if tref.kind == "str" and isinstance(value, str):
        return value
    if isinstance(value, str) and tref.kind != "str":
        text = value.strip()
        if tref.kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a whole number (int)") from None
        if tref.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a number (float)") from None
        if tref.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(f"{value!r} is not true or false (bool)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{value!r} is not valid JSON for a {tref} ({exc.msg})") from None
    adapter = type_adapter(tref)
    try:
        result = adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" for p in err["loc"])
        at = f" at {where}" if where else ""
        raise ValueError(f"{value!r} is not a {tref}{at}: {err['msg'].lower()}") from None
    return adapter.dump_python(result)

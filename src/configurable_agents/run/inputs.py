"""Run inputs: ``--input key=value`` strings and JSON values, checked against state types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config.bounds import describe
from ..config.collector import did_you_mean
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
    raw: Mapping[str, Any],
    spec: Workflow,
    types: Mapping[str, TypeRef],
    *,
    json_values: bool = False,
) -> dict[str, Any]:
    """Check and convert inputs; every problem is reported at once in one ``InputError``.

    Strings (from the command line) are converted by the field's type: int/float/bool by
    value, list/dict/object as JSON. Other values must already fit the type. With
    ``json_values`` (the HTTP API) nothing is converted: each value must be of its field's
    JSON type already (``3`` for an int, not ``"3"``), as the API's JSON Schema says.

    Each ``Issue`` carries ``path`` (the input's name, then where inside its value) and
    ``code``: ``unknown_input``, ``invalid_input`` or ``missing``.
    """
    issues: list[Issue] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in types:
            issues.append(
                Issue(
                    f"input {_quoted(key)} is not a state field",
                    hint=did_you_mean(key, types) or "state fields are: " + ", ".join(types),
                    path=(key,),
                    code="unknown_input",
                )
            )
            continue
        bad = lone_surrogate(value)
        if bad is not None:
            where, char = bad
            at = "".join(f"[{p!r}]" for p in where)
            issues.append(
                Issue(
                    f"input '{key}'{at} holds a lone surrogate (U+{ord(char):04X}), which is not "
                    "Unicode text and cannot be stored",
                    hint="send valid UTF-8 text (a \\ud800-\\udfff escape must be half of a "
                    "surrogate pair)",
                    path=(key, *where),
                    code="invalid_input",
                )
            )
            continue
        try:
            values[key] = (
                _convert_json(value, types[key]) if json_values else _convert(value, types[key])
            )
        except _ConversionError as exc:
            hint = exc.hint or (_json_hint(types[key]) if json_values else _hint(types[key]))
            issues.append(
                Issue(
                    f"input '{key}': {exc}",
                    hint=hint,
                    path=(key, *exc.where),
                    code="invalid_input",
                )
            )
    missing = [name for name, f in spec.state.fields.items() if f.required and name not in values]
    for name in missing:
        if name not in raw:
            issues.append(
                Issue(
                    f"required input '{name}' is missing",
                    hint=f"pass --input {name}=...",
                    path=(name,),
                    code="missing",
                )
            )
    if issues:
        raise InputError(issues)
    return values


def lone_surrogate(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """Where in ``value`` (strings, list items, mapping keys and values) a lone surrogate
    (U+D800..U+DFFF) is, and which: JSON's ``"\\ud800"`` escapes decode to such characters,
    which no UTF-8 database, trace store or model API accepts. None when there is none."""
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            if not item.isascii():
                for char in item:
                    if "\ud800" <= char <= "\udfff":
                        return where, char
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                todo.append(((*where, key), child))
                if isinstance(key, str):
                    todo.append((where, key))
        elif isinstance(item, list):
            todo.extend(((*where, i), child) for i, child in reversed(list(enumerate(item))))
    return None


def _quoted(key: str) -> str:
    """``'key'``, with characters that are not printable escaped (``repr`` style)."""
    return f"'{key}'" if key.isprintable() and "'" not in key else repr(key)


class _ConversionError(ValueError):
    def __init__(
        self, message: str, where: tuple[str | int, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.where = where
        self.hint = hint


def _json_hint(tref: TypeRef) -> str:
    return {
        "str": 'send a JSON string, e.g. "text"',
        "int": 'send a JSON integer, e.g. 3 (not "3")',
        "float": "send a JSON number, e.g. 0.5",
        "bool": "send true or false (JSON booleans, unquoted)",
        "list": 'send a JSON array, e.g. ["a", "b"]',
        "dict": 'send a JSON object, e.g. {"k": "v"}',
        "object": 'send a JSON object with the declared fields, e.g. {"k": "v"}',
    }.get(tref.kind, "send a JSON value")


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
    if tref.kind == "str" and isinstance(value, str) and not tref.bounds:
        return value
    if isinstance(value, str) and tref.kind != "str":
        text = value.strip()
        if tref.kind == "int":
            try:
                return int(text)
            except ValueError:
                raise _ConversionError(f"{value!r} is not a whole number (int)") from None
        if tref.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise _ConversionError(f"{value!r} is not a number (float)") from None
        if tref.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise _ConversionError(f"{value!r} is not true or false (bool)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _ConversionError(
                f"{value!r} is not valid JSON for a {tref} ({exc.msg})"
            ) from None
    adapter = type_adapter(tref)
    try:
        result = adapter.validate_python(value)
    except ValidationError as exc:
        raise _invalid(value, tref, exc) from None
    return adapter.dump_python(result)


def _convert_json(value: Any, tref: TypeRef) -> Any:
    """A JSON value of the HTTP API, checked as JSON against the type (strictly: no
    conversion of strings, booleans are not numbers, objects are mappings)."""
    adapter = type_adapter(tref)
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # Infinity, NaN, or a number too large for a float: not JSON
        raise _ConversionError(
            f"{_short(value)} holds a number that is not finite (Infinity, NaN or out of range)"
        ) from None
    except (TypeError, RecursionError) as exc:  # only from Python callers
        raise _ConversionError(f"{_short(value)} is not a JSON value ({exc})") from None
    try:
        result = adapter.dump_python(adapter.validate_json(text, strict=True))
        json.dumps(result, allow_nan=False)
    except ValidationError as exc:
        raise _invalid(value, tref, exc) from None
    except ValueError:  # an integer too large for a float field
        raise _ConversionError(f"{_short(value)} holds a number out of range for a float") from None
    return result


def _invalid(value: Any, tref: TypeRef, exc: ValidationError) -> _ConversionError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
    where = "".join(f"[{p!r}]" for p in loc)
    at = f" at {where}" if where else ""
    kind = str(tref)
    article = "an" if kind[:1] in "aeiou" else "a"
    if tref.bounds and _fits(value, tref.with_bounds({})):
        return _ConversionError(
            f"{_short(value)} is out of bounds{at}: {err['msg'].lower()}",
            loc,
            f"give {article} {kind} with {describe(tref.bound_map)}",
        )
    return _ConversionError(
        f"{_short(value)} is not {article} {kind}{at}: {err['msg'].lower()}", loc
    )


def _fits(value: Any, tref: TypeRef) -> bool:
    try:
        type_adapter(tref).validate_python(value)
    except ValidationError:
        return False
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."

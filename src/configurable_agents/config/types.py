"""The workflow file's value types: ``str int float bool list[T] dict[str, T] object``.

A type is written as a string in YAML (``type: "list[str]"``). ``parse_type`` turns it into a
``TypeRef`` tree; ``TypeRef.annotation()`` gives the Python/pydantic annotation used to build
state and output models. A field's declared bounds (``min_items``/``max_items`` of a list,
``min_length``/``max_length`` of a str, ``ge``/``le`` of a number; see ``config.bounds``) ride
on its ``TypeRef`` and go into that annotation, so every provider's output, every input and
the JSON Schemas built from the models obey them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Annotated, Any

from pydantic import TypeAdapter

SCALARS = ("str", "int", "float", "bool")
TYPE_HELP = "str, int, float, bool, list[T], dict[str, T] or object"

_TOKEN = re.compile(r"\s*(\w+|\[|\]|,)")


class TypeSyntaxError(ValueError):
    """A type string that is not one of the supported types; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.hint = hint or f"types are {TYPE_HELP}"
        super().__init__(message)


# A declared bound → the pydantic ``Field`` constraint that enforces it (for lists pydantic's
# ``min_length``/``max_length`` count items; JSON Schema says ``minItems``/``maxItems``).
_PYDANTIC_BOUND = {
    "min_items": "min_length",
    "max_items": "max_length",
    "min_length": "min_length",
    "max_length": "max_length",
    "ge": "ge",
    "le": "le",
}


@dataclass(frozen=True)
class TypeRef:
    """A parsed type. ``kind`` is a scalar name, ``list``, ``dict`` or ``object``; ``bounds``
    are the field's declared limits, as sorted ``(name, value)`` pairs (``config.bounds``)."""

    kind: str
    item: TypeRef | None = None  # element type of list / value type of dict
    fields: tuple[tuple[str, TypeRef], ...] = field(default=())  # declared fields of an object
    bounds: tuple[tuple[str, int | float], ...] = field(default=())

    def with_bounds(self, bounds: dict[str, int | float]) -> TypeRef:
        """This type limited by ``bounds`` (replacing any bounds it had)."""
        return replace(self, bounds=tuple(sorted(bounds.items())))

    @property
    def bound_map(self) -> dict[str, int | float]:
        return dict(self.bounds)

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list[{self.item}]"
        if self.kind == "dict":
            return f"dict[str, {self.item}]"
        return self.kind

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("int", "float")

    def accepts(self, other: TypeRef) -> bool:
        """Whether a value of type ``other`` may be stored where ``self`` is declared."""
        if self.kind == "float" and other.kind == "int":
            return True
        if self.kind != other.kind:
            return False
        if self.item is not None and other.item is not None:
            return self.item.accepts(other.item)
        return True

    def annotation(self, name: str = "Object") -> Any:
        """The Python type pydantic validates values of this type against (with its bounds
        as ``Field`` constraints)."""
        base = self._base_annotation(name)
        if not self.bounds:
            return base
        from pydantic import Field

        constraints: dict[str, Any] = {_PYDANTIC_BOUND[k]: v for k, v in self.bounds}
        return Annotated[base, Field(**constraints)]

    def _base_annotation(self, name: str) -> Any:
        from pydantic import StrictBool, create_model

        if self.kind == "str":
            return str
        if self.kind == "int":
            return int
        if self.kind == "float":
            return float
        if self.kind == "bool":
            return StrictBool
        if self.kind == "list":
            assert self.item is not None
            return list[self.item.annotation(name + "Item")]  # type: ignore[misc]
        if self.kind == "dict":
            assert self.item is not None
            return dict[str, self.item.annotation(name + "Value")]  # type: ignore[misc]
        if not self.fields:
            return dict[str, Any]
        specs: dict[str, Any] = {
            fname: (ftype.annotation(name + "_" + fname), ...) for fname, ftype in self.fields
        }
        return create_model(name, **specs)

    def default_value(self) -> Any:
        """The value a field of this type holds when nothing set it."""
        return {"str": "", "int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}.get(
            self.kind, {}
        )


def parse_type(text: str, fields: tuple[tuple[str, TypeRef], ...] = ()) -> TypeRef:
    """Parse ``text`` (for example ``"dict[str, list[int]]"``) into a ``TypeRef``.

    ``fields`` are the nested fields declared for an ``object`` at the top level.
    """
    if not isinstance(text, str):
        raise TypeSyntaxError(f'a type must be a string such as "str", got {text!r}')
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text) or not tokens:
        raise TypeSyntaxError(f"unknown type {text!r} (use {TYPE_HELP})")
    pos = 0

    def parse() -> TypeRef:
        nonlocal pos
        if pos >= len(tokens):
            raise TypeSyntaxError(f"type {text!r} ends too early; use {TYPE_HELP}")
        name = tokens[pos]
        pos += 1
        if name in ("[", "]", ","):
            raise TypeSyntaxError(
                f"type {text!r} has {name!r} where a type name belongs",
                "write a type name inside the brackets, for example list[str]",
            )
        if name in SCALARS:
            return TypeRef(name)
        if name == "object":
            return TypeRef("object")
        if name in ("list", "dict"):
            if pos >= len(tokens) or tokens[pos] != "[":
                example = "list[str]" if name == "list" else "dict[str, str]"
                raise TypeSyntaxError(
                    f"type {text!r} needs an item type, for example {example!r}",
                    f"write {example}",
                )
            pos += 1
            if name == "dict":
                if tokens[pos : pos + 2] == ["str", "]"]:
                    raise TypeSyntaxError(
                        f"type {text!r} needs a value type",
                        "write dict[str, T], for example dict[str, int]",
                    )
                if tokens[pos : pos + 2] != ["str", ","]:
                    raise TypeSyntaxError(
                        f"type {text!r}: dict keys are always strings",
                        "write dict[str, T], for example dict[str, int]",
                    )
                pos += 2
            item = parse()
            if pos >= len(tokens) or tokens[pos] != "]":
                raise TypeSyntaxError(
                    f"type {text!r} is missing a closing ']'", "close every '[' with a ']'"
                )
            pos += 1
            return TypeRef(name, item=item)
        aliases = {
            "string": "str",
            "integer": "int",
            "boolean": "bool",
            "number": "float",
            "double": "float",
            "array": "list",
            "map": "dict",
            "mapping": "dict",
        }
        known = (*SCALARS, "list", "dict", "object")
        lower = name.lower()
        close = difflib.get_close_matches(lower, known, n=1, cutoff=0.75)
        guess = lower if lower in known else aliases.get(lower) or (close[0] if close else None)
        where = "" if name == text.strip() else f" in {text!r}"
        if guess:
            raise TypeSyntaxError(
                f"unknown type {name!r}{where}; did you mean {guess!r}?",
                f"write {guess!r} (types are {TYPE_HELP})",
            )
        raise TypeSyntaxError(f"unknown type {name!r}{where} (use {TYPE_HELP})")

    result = parse()
    if pos != len(tokens):
        raise TypeSyntaxError(
            f"unexpected {''.join(tokens[pos:])!r} after type in {text!r}",
            f"only list and dict take brackets; types are {TYPE_HELP}",
        )
    if fields:
        if result.kind != "object":
            raise TypeSyntaxError(
                f"only type 'object' may declare nested fields, not {text!r}",
                "write type: object, or remove the nested fields",
            )
        return TypeRef("object", fields=fields)
    return result


@lru_cache(maxsize=1024)
def type_adapter(tref: TypeRef) -> TypeAdapter[Any]:
    """The (cached) pydantic adapter that validates values of type ``tref``."""
    return TypeAdapter(tref.annotation())

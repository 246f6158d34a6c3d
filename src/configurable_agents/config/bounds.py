"""Bounds a state field or an output field may declare, and the rules they follow.

``min_items`` / ``max_items`` limit how many items a ``list[T]`` holds, ``min_length`` /
``max_length`` how many characters a ``str`` has, ``ge`` / ``le`` the smallest and largest
value of an ``int`` or ``float``. A field's bounds ride on its ``TypeRef`` (``types``), so the
pydantic models built from it enforce them on every provider's output (an answer out of bounds
is invalid and retried with the error fed back, as other validation errors are), on inputs, and
in the JSON Schemas (``minItems``, ``maxLength``, ``minimum``, ...) sent to the models; the
local provider's grammar keeps them (``providers.local_structured.guide_schema``).

A node's output must satisfy both its ``output_schema`` field's bounds and its state field's
(``intersect``). A default equal to the type's empty value (``""``, ``[]``, 0) stands for "not
written yet" and is not held to the bounds; any other default is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .types import TypeRef

# bound → the kinds it applies to
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "min_items": ("list",),
    "max_items": ("list",),
    "min_length": ("str",),
    "max_length": ("str",),
    "ge": ("int", "float"),
    "le": ("int", "float"),
}
BOUND_KEYS = tuple(APPLIES_TO)
# (lower, upper, unit) of each pair
_PAIRS = (("min_items", "max_items", "items"), ("min_length", "max_length", "characters"))
_NUMBER_PAIR = ("ge", "le")
# what to write instead, by the kind of the field a bound does not apply to
_INSTEAD = {
    "str": "a str's length is bounded by min_length / max_length (characters)",
    "list": "a list's size is bounded by min_items / max_items",
    "int": "a number is bounded by ge / le (the smallest and largest value)",
    "float": "a number is bounded by ge / le (the smallest and largest value)",
}

Add = Callable[[tuple[str | int, ...], str, str], None]  # (path, message, hint)


def applicable(kind: str, bounds: dict[str, Any]) -> dict[str, Any]:
    """The bounds that apply to a field of ``kind``."""
    return {k: v for k, v in bounds.items() if kind in APPLIES_TO[k]}


def problems(tref: TypeRef, bounds: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What is wrong with ``bounds`` declared on a field of type ``tref``:
    ``(bound, message, hint)`` for each bound that does not apply to the type, is not a
    finite number, or leaves no value possible (a lower bound above the upper one)."""
    out: list[tuple[str, str, str]] = []
    for key, value in bounds.items():
        if tref.kind not in APPLIES_TO[key]:
            kinds = " and ".join(APPLIES_TO[key])
            instead = _INSTEAD.get(tref.kind, f"a {tref} field takes no bounds")
            out.append(
                (
                    key,
                    f"{key} applies to {kinds} fields, not to {_a(tref)}",
                    f"{instead}; or remove {key}",
                )
            )
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((key, f"{key} must be a finite number, not {value}", f"e.g. {key}: 0"))
    for low, high, unit in _PAIRS:
        if low in bounds and high in bounds and bounds[low] > bounds[high]:
            out.append(
                (
                    low,
                    f"{low} ({bounds[low]}) is more than {high} ({bounds[high]}), so no value fits",
                    f"lower {low} or raise {high} (equal values ask for exactly that many {unit})",
                )
            )
    low, high = _NUMBER_PAIR
    if low in bounds and high in bounds and _finite(bounds[low], bounds[high]):
        if bounds[low] > bounds[high]:
            out.append(
                (
                    low,
                    f"ge ({bounds[low]:g}) is more than le ({bounds[high]:g}), so no value fits",
                    "lower ge or raise le",
                )
            )
        elif tref.kind == "int" and math.floor(bounds[high]) < math.ceil(bounds[low]):
            out.append(
                (
                    low,
                    f"no whole number lies between ge ({bounds[low]:g}) and le ({bounds[high]:g})",
                    "widen the range, or make the field a float",
                )
            )
    return out


def intersect(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The tightest bounds that satisfy both: the larger of the lower bounds, the smaller of
    the upper ones."""
    out = dict(first)
    for key, value in second.items():
        if key not in out:
            out[key] = value
        elif key in ("min_items", "min_length", "ge"):
            out[key] = max(out[key], value)
        else:
            out[key] = min(out[key], value)
    return out


def conflict(bounds: dict[str, Any]) -> str | None:
    """``"min_items 5 > max_items 3"`` when ``bounds`` leave no value possible, else None."""
    for low, high in (*((a, b) for a, b, _ in _PAIRS), _NUMBER_PAIR):
        if low in bounds and high in bounds and bounds[low] > bounds[high]:
            return f"{low} {bounds[low]:g} > {high} {bounds[high]:g}"
    return None


def describe(bounds: dict[str, Any]) -> str:
    """``"3 items"``, ``"at most 20 characters"``, ``"a value from 1 to 10"``."""
    parts = []
    for low, high, unit in _PAIRS:
        if low in bounds and high in bounds:
            same = bounds[low] == bounds[high]
            parts.append(
                f"{bounds[low]} {unit}" if same else f"{bounds[low]} to {bounds[high]} {unit}"
            )
        elif low in bounds:
            parts.append(f"at least {bounds[low]} {unit}")
        elif high in bounds:
            parts.append(f"at most {bounds[high]} {unit}")
    low, high = _NUMBER_PAIR
    if low in bounds and high in bounds:
        parts.append(f"a value from {bounds[low]:g} to {bounds[high]:g}")
    elif low in bounds:
        parts.append(f"a value of at least {bounds[low]:g}")
    elif high in bounds:
        parts.append(f"a value of at most {bounds[high]:g}")
    return " and ".join(parts)


def is_empty_value(tref: TypeRef, value: Any) -> bool:
    """The type's empty value (``""``, ``[]``, 0, 0.0): a default that means "not written"."""
    empty = tref.default_value()
    if isinstance(value, bool) or isinstance(empty, bool):
        return False
    numbers = isinstance(value, int | float) and isinstance(empty, int | float)
    return (numbers or type(value) is type(empty)) and value == empty


def check_field(
    add: Add,
    path: tuple[str | int, ...],
    label: str,
    spec: Any,
    tref: TypeRef,
) -> bool:
    """Report the bound problems of a state or output field ``spec`` (of type ``tref``) and
    of its nested fields, each at the bound's own key; whether the field's own had any."""
    found = problems(tref, spec.declared_bounds())
    for key, message, hint in found:
        add((*path, key), f"{label}: {message}", hint)
    nested: Iterable[tuple[Any, Any, tuple[str | int, ...]]]
    if isinstance(spec.fields, dict):  # a state field: {name: StateField}
        nested = ((name, f, (*path, "fields", name)) for name, f in spec.fields.items())
    else:  # an output field: [OutputField]
        nested = ((f.name, f, (*path, "fields", j)) for j, f in enumerate(spec.fields or []))
    inner = dict(tref.fields)
    for name, child, child_path in nested:
        if name in inner:
            check_field(add, child_path, f"{label} field '{name}'", child, inner[name])
    return bool(found)


def _finite(*values: Any) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def _a(tref: TypeRef) -> str:
    text = str(tref)
    return ("an " if text[:1] in "aeiou" else "a ") + text

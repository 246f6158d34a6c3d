"""The file format's value types: parsing, compatibility, annotations and defaults."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from configurable_agents.config.types import TypeRef, TypeSyntaxError, parse_type


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("str", "str"),
        ("int", "int"),
        ("float", "float"),
        ("bool", "bool"),
        ("object", "object"),
        ("list[str]", "list[str]"),
        ("list[list[int]]", "list[list[int]]"),
        ("dict[str, int]", "dict[str, int]"),
        ("dict[str,float]", "dict[str, float]"),
        ("dict[str, list[bool]]", "dict[str, list[bool]]"),
        ("list[dict[str, str]]", "list[dict[str, str]]"),
        ("list[object]", "list[object]"),
        ("  list[ str ]  ", "list[str]"),
    ],
)
def test_parse_valid_types(text: str, shown: str) -> None:
    assert str(parse_type(text)) == shown


def test_parse_structure() -> None:
    ref = parse_type("dict[str, list[int]]")
    assert ref.kind == "dict"
    assert ref.item == TypeRef("list", item=TypeRef("int"))


def test_object_with_nested_fields() -> None:
    ref = parse_type("object", (("name", TypeRef("str")), ("n", TypeRef("int"))))
    assert ref.kind == "object"
    assert dict(ref.fields) == {"name": TypeRef("str"), "n": TypeRef("int")}
    model = ref.annotation("Thing")
    assert model(name="x", n=1).n == 1
    with pytest.raises(ValidationError):
        model(name="x")


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("list", "type 'list' needs an item type, for example 'list[str]'", "write list[str]"),
        ("dict", "needs an item type, for example 'dict[str, str]'", "write dict[str, str]"),
        ("dict[int, str]", "dict keys are always strings", "write dict[str, T]"),
        ("dict[str]", "needs a value type", "write dict[str, T]"),
        ("string", "unknown type 'string'; did you mean 'str'?", "write 'str'"),
        ("integer", "did you mean 'int'?", "write 'int'"),
        ("boolean", "did you mean 'bool'?", "write 'bool'"),
        ("number", "did you mean 'float'?", "write 'float'"),
        ("List[str]", "unknown type 'List' in 'List[str]'; did you mean 'list'?", "write 'list'"),
        ("list[strng]", "unknown type 'strng' in 'list[strng]'; did you mean 'str'?", "write"),
        ("banana", "unknown type 'banana'", "types are str, int"),
        ("list[str", "missing a closing ']'", "close every"),
        ("list[]", "has ']' where a type name belongs", "list[str]"),
        ("str[int]", "unexpected '[int]' after type", "only list and dict"),
        ("list[str]]", "unexpected ']' after type", "only list and dict"),
        ("", "unknown type ''", "types are"),
        ("list<str>", "unknown type 'list<str>'", "types are"),
        ("dict[str, ", "ends too early", "types are"),
    ],
)
def test_parse_errors(text: str, message: str, hint: str) -> None:
    with pytest.raises(TypeSyntaxError) as info:
        parse_type(text)
    assert message in str(info.value)
    assert info.value.hint is not None
    assert hint in info.value.hint


def test_type_must_be_a_string() -> None:
    with pytest.raises(TypeSyntaxError, match="must be a string"):
        parse_type(3)  # type: ignore[arg-type]


def test_nested_fields_only_on_object() -> None:
    with pytest.raises(TypeSyntaxError, match="only type 'object' may declare nested fields"):
        parse_type("str", (("x", TypeRef("int")),))


@pytest.mark.parametrize(
    ("declared", "given", "ok"),
    [
        ("float", "int", True),
        ("int", "float", False),
        ("str", "str", True),
        ("str", "int", False),
        ("bool", "int", False),
        ("list[float]", "list[int]", True),
        ("list[int]", "list[float]", False),
        ("list[str]", "list[int]", False),
        ("dict[str, float]", "dict[str, int]", True),
        ("list[str]", "dict[str, str]", False),
        ("object", "object", True),
    ],
)
def test_accepts(declared: str, given: str, ok: bool) -> None:
    assert parse_type(declared).accepts(parse_type(given)) is ok


@pytest.mark.parametrize(
    ("text", "good", "bad"),
    [
        ("str", "x", 1),
        ("int", 3, "three"),
        ("float", 1.5, "x"),
        ("bool", True, "yes"),
        ("list[int]", [1, 2], ["a"]),
        ("dict[str, str]", {"a": "b"}, {"a": ["b"]}),
        ("object", {"any": 1}, [1]),
    ],
)
def test_annotation_validates(text: str, good: Any, bad: Any) -> None:
    adapter = TypeAdapter(parse_type(text).annotation())
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError):
        adapter.validate_python(bad)


@pytest.mark.parametrize(
    ("text", "default"),
    [
        ("str", ""),
        ("int", 0),
        ("float", 0.0),
        ("bool", False),
        ("list[str]", []),
        ("dict[str, int]", {}),
        ("object", {}),
    ],
)
def test_default_values(text: str, default: Any) -> None:
    value = parse_type(text).default_value()
    assert value == default
    assert type(value) is type(default)


def test_is_numeric() -> None:
    assert parse_type("int").is_numeric
    assert parse_type("float").is_numeric
    assert not parse_type("bool").is_numeric
    assert not parse_type("str").is_numeric

"""Route conditions: a safe expression language, type-checked up front, never eval'd."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from configurable_agents.config.conditions import ConditionError, compile_condition
from configurable_agents.config.types import TypeRef, parse_type

FIELDS: dict[str, TypeRef] = {
    name: parse_type(t)
    for name, t in {
        "score": "int",
        "ratio": "float",
        "topic": "str",
        "approved": "bool",
        "tags": "list[str]",
        "counts": "list[int]",
        "meta": "dict[str, str]",
    }.items()
}
STATE: dict[str, Any] = {
    "score": 7,
    "ratio": 0.25,
    "topic": "tide pools",
    "approved": True,
    "tags": ["sea", "life"],
    "counts": [1, 2, 3],
    "meta": {"lang": "en"},
}


def check(source: str, state: dict[str, Any] | None = None) -> bool:
    return compile_condition(source, FIELDS)(STATE if state is None else state)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("score >= 7", True),
        ("score > 7", False),
        ("score == 7", True),
        ("score != 7", False),
        ("score < 7.5", True),
        ("ratio <= 0.25", True),
        ("ratio == 0", False),
        ("score >= 7 and ratio < 0.5", True),
        ("score >= 7 and ratio > 0.5", False),
        ("score > 100 or topic == 'tide pools'", True),
        ("score > 100 or topic == 'x'", False),
        ("not score > 100", True),
        ("not (score >= 7 and approved)", False),
        ("approved", True),
        ("approved == true", True),
        ("approved == True", True),
        ("approved != false", True),
        ("1 < score < 10", True),
        ("1 < score < 5", False),
        ("10 > score > 1 > 0", True),
        ("'sea' in tags", True),
        ("'sky' in tags", False),
        ("'sky' not in tags", True),
        ("2 in counts", True),
        ("'pool' in topic", True),
        ("'Pool' in topic", False),
        ("'lang' in meta", True),
        ("topic in ['tide pools', 'reefs']", True),
        ("score in [1, 2, 3]", False),
        ("score in (7, 8)", True),
        ("len(tags) == 2", True),
        ("len(topic) > 100", False),
        ("len(meta) == 1", True),
        ("score > -1", True),
        ("topic != null", True),
        ("topic == None", False),
        ("true", True),
        ("false or approved", True),
    ],
)
def test_evaluation(source: str, expected: bool) -> None:
    assert check(source) is expected


def test_none_values_compare_false_instead_of_raising() -> None:
    empty = dict.fromkeys(STATE)
    assert check("score >= 7", empty) is False
    assert check("score < 7", empty) is False
    assert check("1 < score < 10", empty) is False
    assert check("'sea' in tags", empty) is False
    assert check("'x' in topic", empty) is False
    assert check("len(tags) == 0", empty) is True
    assert check("topic == null", empty) is True
    assert check("approved", empty) is False
    assert check("score >= 7", {}) is False  # missing entirely


def test_condition_records_fields_used() -> None:
    cond = compile_condition("score >= 7 and 'a' in tags or true", FIELDS)
    assert cond.fields == frozenset({"score", "tags"})
    assert cond.source == "score >= 7 and 'a' in tags or true"


def error(source: str) -> ConditionError:
    with pytest.raises(ConditionError) as info:
        compile_condition(source, FIELDS)
    assert info.value.hint
    return info.value


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("", "condition is empty"),
        ("   ", "condition is empty"),
        ("score >=", "not valid syntax"),
        ("score = 7", "not valid syntax"),
        ("score === 7", "not valid syntax"),
    ],
)
def test_syntax_errors(source: str, fragment: str) -> None:
    assert fragment in str(error(source))


def test_unknown_field_suggests_a_close_one() -> None:
    exc = error("scor >= 7")
    assert "'scor' is not a state field" in str(exc)
    assert exc.hint == "did you mean 'score'?"


def test_unknown_field_lists_fields_when_nothing_is_close() -> None:
    assert error("zzz == 1").hint.startswith("state fields are: approved, counts, meta")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ('score >= "high"', "'>=' orders int against str"),
        ("topic < 3", "'<' orders str against int"),
        ("score == 'seven'", "'==' compares int with str"),
        ("approved == 1", "'==' compares bool with int"),
        ("'a' in score", "'in' tests str in int"),
        ("1 in tags", "'in' tests int in list[str]"),
        ("len(score) > 1", "len() of an int value"),
        ("score", "is an int value, not true/false"),
        ("topic and approved", "'topic' is a str value"),
        ("not tags", "'tags' is a list[str] value"),
        ("score > null", "orders int against none"),
    ],
)
def test_type_mismatches(source: str, fragment: str) -> None:
    assert fragment in str(error(source))


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("__import__('os').system('true')", "calling '__import__('os').system'"),
        ("topic.__class__", "attribute access 'topic.__class__'"),
        ("topic.__class__ == 1", "attribute access"),
        ("topic.upper() == 'A'", "calling 'topic.upper'"),
        ("[x for x in tags] == []", "a list comprehension"),
        ("any(x for x in tags)", "calling 'any'"),
        ("lambda: True", "a lambda"),
        ("(lambda: 1)() == 1", "calling 'lambda: 1'"),
        ("tags[0] == 'a'", "indexing 'tags[0]'"),
        ("score + 1 > 2", "arithmetic"),
        ("score if approved else ratio", "an if/else expression"),
        ("f'{topic}' == 'a'", "an f-string"),
        ("{'a': 1} == meta", "a dict literal"),
        ("(score := 1) == 1", "an assignment"),
        ("len(tags, 2) == 1", "calling 'len'"),
        ("len(x=tags) == 1", "calling 'len'"),
        ("[topic] == tags", "list literals may hold literals only"),
        ("b'x' == topic", "literal b'x' is not allowed"),
        ("-topic == 1", "'-topic' is not allowed"),
    ],
)
def test_disallowed_constructs(source: str, fragment: str) -> None:
    exc = error(source)
    assert fragment in str(exc)


def test_rejection_never_executes_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = tmp_path / "ran"
    calls: list[str] = []

    def spy(*args: object, **kwargs: object) -> None:
        calls.append("called")

    monkeypatch.setattr(builtins, "eval", spy)
    monkeypatch.setattr(builtins, "exec", spy)
    monkeypatch.setattr(builtins, "open", spy)
    for source in [
        f"__import__('pathlib').Path({str(sentinel)!r}).touch()",
        f"open({str(sentinel)!r}, 'w')",
        "exec('x = 1') == None",
        "eval('1') == 1",
    ]:
        with pytest.raises(ConditionError):
            compile_condition(source, FIELDS)
    assert calls == []
    assert not sentinel.exists()


def test_too_long_and_too_deep_conditions_are_clean_errors() -> None:
    assert "characters long" in str(error(" and ".join(["approved"] * 500)))
    assert "nested" in str(error("(" * 250 + "approved" + ")" * 250))
    assert compile_condition("not " * 240 + "approved", FIELDS)(STATE) is True  # within limits


def test_long_conditions_are_shortened_in_messages() -> None:
    source = "score >= 7 and " * 30 + "scor > 1"
    text = str(error(source))
    assert "'scor' is not a state field" in text
    assert len(text) < 250

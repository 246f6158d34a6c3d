"""Route conditions: a small, safe expression language over state fields.

Grammar (Python's expression syntax, restricted)::

    expr    := expr "and" expr | expr "or" expr | "not" expr | compare | operand
    compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand)+
    operand := FIELD | "len(" FIELD ")" | literal | "[" literal, ... "]" | "(" expr ")"
    literal := number | "string" | true | false | null   (True/False/None also accepted)

A condition is parsed with ``ast.parse`` and checked against the state's types when the
workflow is validated; at run time it is interpreted node by node. Nothing is ever passed to
``eval``: calls other than ``len``, attribute access, indexing, lambdas, comprehensions and
every other construct are rejected before any model is called.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .collector import did_you_mean
from .types import TypeRef

_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_SYMBOL = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_NONE = TypeRef("none")
_ANY = TypeRef("any")

Evaluator = Callable[[Mapping[str, Any]], Any]
MAX_LENGTH = 1000  # characters; a route condition is one line of logic


def _a(kind: TypeRef) -> str:
    """'a str value', 'an int value'."""
    text = str(kind)
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _shown(source: str) -> str:
    return repr(source if len(source) <= 80 else source[:77] + "...")


class ConditionError(ValueError):
    """A condition that does not parse or does not fit the state's types."""

    def __init__(self, message: str, hint: str) -> None:
        self.hint = hint
        super().__init__(message)


@dataclass(frozen=True)
class Condition:
    source: str
    fields: frozenset[str]
    _evaluate: Evaluator

    def __call__(self, state: Mapping[str, Any]) -> bool:
        return bool(self._evaluate(state))


def compile_condition(source: str, fields: Mapping[str, TypeRef]) -> Condition:
    """Parse and type-check ``source`` against the state ``fields``; raise ``ConditionError``."""
    text = source.strip()
    if not text:
        raise ConditionError("condition is empty", "write a comparison such as: score >= 7")
    if len(text) > MAX_LENGTH:
        raise ConditionError(
            f"condition {_shown(source)} is {len(text)} characters long (limit {MAX_LENGTH})",
            "split the logic: compute a bool field in a node and route on it",
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConditionError(
            f"condition {_shown(source)} is not valid syntax ({exc.msg})",
            "use comparisons (==, !=, <, <=, >, >=, in), and/or/not, fields and literals; "
            "e.g. score >= 7 and approved == true",
        ) from None
    except (RecursionError, MemoryError):
        raise _too_deep(source) from None
    checker = _Checker(source, fields)
    try:
        kind, evaluate = checker.visit(tree.body)
    except RecursionError:
        raise _too_deep(source) from None
    if kind.kind not in ("bool", "any"):
        raise ConditionError(
            f"condition {_shown(source)} is {_a(kind)} value, not true/false",
            f"compare it, for example: {text} != {_example_literal(kind)}",
        )
    return Condition(source, frozenset(checker.used), evaluate)


def _too_deep(source: str) -> ConditionError:
    return ConditionError(
        f"condition {_shown(source)} is nested too deeply",
        "write it with fewer nested parentheses / 'not's",
    )


def _example_literal(kind: TypeRef) -> str:
    return {"str": "''", "int": "0", "float": "0.0", "list": "[]"}.get(kind.kind, "null")


class _Checker:
    def __init__(self, source: str, fields: Mapping[str, TypeRef]) -> None:
        self.source = source
        self.fields = fields
        self.used: set[str] = set()

    def fail(self, message: str, hint: str) -> ConditionError:
        return ConditionError(f"condition {_shown(self.source)}: {message}", hint)

    def visit(self, node: ast.AST) -> tuple[TypeRef, Evaluator]:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.fail(
                f"{_describe(node)} is not allowed",
                "conditions use fields, literals, comparisons, and/or/not and len(field) only",
            )
        result: tuple[TypeRef, Evaluator] = method(node)
        return result

    def visit_BoolOp(self, node: ast.BoolOp) -> tuple[TypeRef, Evaluator]:
        parts = [self._boolean(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return TypeRef("bool"), lambda s: all(p(s) for p in parts)
        return TypeRef("bool"), lambda s: any(p(s) for p in parts)

    def _boolean(self, node: ast.AST) -> Evaluator:
        kind, ev = self.visit(node)
        if kind.kind not in ("bool", "any"):
            raise self.fail(
                f"'{ast.unparse(node)}' is {_a(kind)} value, not true/false",
                f"compare it, for example: {ast.unparse(node)} != {_example_literal(kind)}",
            )
        return ev

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[TypeRef, Evaluator]:
        if isinstance(node.op, ast.Not):
            inner = self._boolean(node.operand)
            return TypeRef("bool"), lambda s: not inner(s)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            kind, ev = self.visit_Constant(node.operand)
            if kind.is_numeric:
                value = -ev({})
                return kind, lambda s: value
        raise self.fail(f"'{ast.unparse(node)}' is not allowed", "only 'not' and negative numbers")

    def visit_Compare(self, node: ast.Compare) -> tuple[TypeRef, Evaluator]:
        left_kind, left = self.visit(node.left)
        steps: list[tuple[Callable[[Any, Any], bool], Evaluator]] = []
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right_kind, right = self.visit(right_node)
            self._check_compare(op, left_kind, right_kind, node)
            steps.append((_COMPARE[type(op)], right))
            left_kind = right_kind

        def evaluate(s: Mapping[str, Any]) -> bool:
            a = left(s)
            for fn, right_ev in steps:
                b = right_ev(s)
                try:
                    if not fn(a, b):
                        return False
                except TypeError:
                    return False
                a = b
            return True

        return TypeRef("bool"), evaluate

    def _check_compare(self, op: ast.cmpop, a: TypeRef, b: TypeRef, node: ast.AST) -> None:
        sym = _SYMBOL[type(op)]
        if "any" in (a.kind, b.kind):
            return
        mismatch = self.fail(
            f"'{sym}' compares {a} with {b}",
            "compare values of the same type, e.g. a number field with a number",
        )
        if isinstance(op, (ast.Eq, ast.NotEq)):
            if "none" in (a.kind, b.kind) or (a.is_numeric and b.is_numeric) or a.kind == b.kind:
                return
            raise mismatch
        if isinstance(op, (ast.In, ast.NotIn)):
            if b.kind == "str" and a.kind == "str":
                return
            if b.kind == "dict" and a.kind == "str":
                return
            if b.kind == "list":
                item = b.item or _ANY
                if item.kind == "any" or item.accepts(a) or a.accepts(item):
                    return
            raise self.fail(
                f"'{sym}' tests {a} in {b}",
                "use 'x in list_field' with a matching item type, or a substring in a str",
            )
        if (a.is_numeric and b.is_numeric) or (a.kind == b.kind == "str"):
            return
        raise self.fail(
            f"'{sym}' orders {a} against {b}",
            "<, <=, >, >= work on two numbers or two strings",
        )

    def visit_Name(self, node: ast.Name) -> tuple[TypeRef, Evaluator]:
        name = node.id
        if name in _LITERALS:
            value = _LITERALS[name]
            return _literal_kind(value), lambda s: value
        if name not in self.fields:
            raise self.fail(
                f"'{name}' is not a state field",
                did_you_mean(name, self.fields)
                or "state fields are: " + ", ".join(sorted(self.fields)),
            )
        self.used.add(name)
        return self.fields[name], lambda s: s.get(name)

    def visit_Constant(self, node: ast.Constant) -> tuple[TypeRef, Evaluator]:
        value = node.value
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise self.fail(f"literal {value!r} is not allowed", "use numbers, strings, true/false")
        return _literal_kind(value), lambda s: value

    def visit_List(self, node: ast.List | ast.Tuple) -> tuple[TypeRef, Evaluator]:
        items = [self.visit(e) for e in node.elts]
        for e in node.elts:
            if not isinstance(e, ast.Constant) and not (
                isinstance(e, ast.UnaryOp) and isinstance(e.operand, ast.Constant)
            ):
                raise self.fail("list literals may hold literals only", "e.g. ['draft', 'final']")
        values = [ev({}) for _, ev in items]
        kinds = {k.kind for k, _ in items}
        item = items[0][0] if len(kinds) == 1 else _ANY
        return TypeRef("list", item=item), lambda s: values

    visit_Tuple = visit_List

    def visit_Call(self, node: ast.Call) -> tuple[TypeRef, Evaluator]:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "len"
            and len(node.args) == 1
            and not node.keywords
        ):
            kind, ev = self.visit(node.args[0])
            if kind.kind not in ("str", "list", "dict", "object", "any"):
                raise self.fail(f"len() of {_a(kind)} value", "len() works on str, list and dict")
            return TypeRef("int"), lambda s: len(ev(s) or ())
        raise self.fail(
            f"calling '{ast.unparse(node.func)}' is not allowed",
            "conditions cannot call functions; only len(field) is available",
        )


def _literal_kind(value: Any) -> TypeRef:
    if value is None:
        return _NONE
    return TypeRef(type(value).__name__)


_CONSTRUCTS = {
    "Attribute": "attribute access",
    "Subscript": "indexing",
    "BinOp": "arithmetic",
    "ListComp": "a list comprehension",
    "SetComp": "a set comprehension",
    "DictComp": "a dict comprehension",
    "GeneratorExp": "a generator expression",
    "Lambda": "a lambda",
    "IfExp": "an if/else expression",
    "JoinedStr": "an f-string",
    "NamedExpr": "an assignment (:=)",
    "Dict": "a dict literal",
    "Set": "a set literal",
    "Starred": "unpacking (*)",
    "Await": "await",
    "Yield": "yield",
    "YieldFrom": "yield",
    "Slice": "slicing",
}


def _describe(node: ast.AST) -> str:
    text = ast.unparse(node)
    shown = repr(text if len(text) <= 60 else text[:57] + "...")
    what = _CONSTRUCTS.get(type(node).__name__, f"the expression ({type(node).__name__})")
    return f"{what} {shown}"

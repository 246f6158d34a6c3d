"""Built-in tools that work offline: ``calculator`` and ``current_time``."""

from __future__ import annotations

import ast
import math
import operator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

_BINARY: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "exp": math.exp,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        if isinstance(node.value, bool):
            raise ValueError("true/false are not numbers")
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 100 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        function: Any = _FUNCTIONS[node.func.id]
        return function(*(_evaluate(a) for a in node.args))  # type: ignore[no-any-return]
    raise ValueError(f"'{ast.unparse(node)}' is not arithmetic")


class CalculatorArgs(BaseModel):
    expression: str = Field(
        description="Arithmetic such as '(2 + 3) * 4' or 'sqrt(2)'", examples=["2 + 2"]
    )


class CurrentTimeArgs(BaseModel):
    timezone_name: str = Field(
        "UTC", description="IANA time zone such as 'Europe/Paris'", examples=["UTC"]
    )


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses,
    sqrt, abs, round, min, max, log, exp, pi and e."""
    if len(expression) > 500:
        return "error: expression longer than 500 characters"
    try:
        result = _evaluate(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        return f"error: {exc}"
    return str(result)


def current_time(timezone_name: str = "UTC") -> str:
    """Return the current date and time in ISO 8601 for a time zone (default UTC)."""
    try:
        tz = UTC if timezone_name.upper() == "UTC" else ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"error: unknown time zone {timezone_name!r}"
    return datetime.now(tz).isoformat(timespec="seconds")


BUILTIN_TOOLS: dict[str, BaseTool] = {
    "calculator": StructuredTool.from_function(calculator, args_schema=CalculatorArgs),
    "current_time": StructuredTool.from_function(current_time, args_schema=CurrentTimeArgs),
}

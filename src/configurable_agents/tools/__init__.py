"""The tool registry: built-in tools by name, user tools as ``module:function``.

A new built-in tool goes in ``tools/builtins.py`` and into ``BUILTIN_TOOLS``. A user tool is
any Python function with type hints and a docstring, named in YAML as ``package.module:func``;
it becomes a LangChain tool so tool-calling models can use it and tracing records it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from langchain_core.tools import BaseTool, StructuredTool

from .builtins import BUILTIN_TOOLS

__all__ = ["BUILTIN_TOOLS", "ToolResolutionError", "resolve_tool"]


class ToolResolutionError(ValueError):
    def __init__(self, message: str, hint: str) -> None:
        self.hint = hint
        super().__init__(message)


def resolve_tool(spec: str) -> BaseTool:
    """Return the LangChain tool for a registry name or a ``module:function`` path."""
    if ":" not in spec:
        if spec in BUILTIN_TOOLS:
            return BUILTIN_TOOLS[spec]
        import difflib

        close = difflib.get_close_matches(spec, list(BUILTIN_TOOLS), n=1)
        raise ToolResolutionError(
            f"unknown tool '{spec}'",
            (f"did you mean '{close[0]}'? " if close else "")
            + "built-in tools: "
            + ", ".join(sorted(BUILTIN_TOOLS))
            + "; your own function: 'package.module:function'",
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ToolResolutionError(
            f"tool '{spec}': cannot import module '{module_name}' ({type(exc).__name__}: {exc})",
            "make the module importable (installed, or on PYTHONPATH next to the workflow)",
        ) from None
    func = getattr(module, attr, None)
    if func is None:
        raise ToolResolutionError(
            f"tool '{spec}': module '{module_name}' has no attribute '{attr}'",
            "write 'module:function' with the function's exact name",
        )
    if isinstance(func, BaseTool):
        return func
    if not callable(func):
        raise ToolResolutionError(f"tool '{spec}' is not a function", "point at a function")
    return _wrap(func, attr)


def _wrap(func: Callable[..., object], name: str) -> BaseTool:
    description = (func.__doc__ or "").strip() or f"The user tool {name}."
    return StructuredTool.from_function(func, name=name, description=description)

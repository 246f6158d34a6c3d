"""Run compiled workflows: the executor, run inputs, per-run context and results.

The executor reports every run to the observer installed in ``run.hooks`` (the package
installs the observability layer's); nothing here imports ``observe``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..usage import TokenUsage
    from .executor import initial_state, prepare, run_workflow
    from .inputs import coerce_inputs, parse_pairs, read_input_file
    from .result import NodeRun, RunErrorInfo, RunResult, ToolCall

# LangGraph loads on first use, so importing ``run.hooks`` stays cheap.
_LAZY = {
    "initial_state": ".executor",
    "prepare": ".executor",
    "run_workflow": ".executor",
    "coerce_inputs": ".inputs",
    "parse_pairs": ".inputs",
    "read_input_file": ".inputs",
    "NodeRun": ".result",
    "RunErrorInfo": ".result",
    "RunResult": ".result",
    "ToolCall": ".result",
    "TokenUsage": "..usage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NodeRun",
    "RunErrorInfo",
    "RunResult",
    "TokenUsage",
    "ToolCall",
    "coerce_inputs",
    "initial_state",
    "parse_pairs",
    "prepare",
    "read_input_file",
    "run_workflow",
]

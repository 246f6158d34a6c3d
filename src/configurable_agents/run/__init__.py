"""Run compiled workflows: the executor, run inputs, per-run context and results."""

from .executor import initial_state, prepare, run_workflow
from .inputs import coerce_inputs, parse_pairs, read_input_file
from .result import NodeRun, RunErrorInfo, RunResult, TokenUsage, ToolCall

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

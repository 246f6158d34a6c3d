"""configurable-agents: LLM workflows in one YAML file, run on LangGraph, observable.

Architecture, in layers (each imports only the ones before it; ``make lint`` checks it):
``config`` (file format, loading, validation) → ``compile`` (per-node plans) → ``run``
(the LangGraph graph, executor, model calls, results), with ``providers`` (one module per
chat-model provider) and ``tools`` (the tool registry) below ``compile`` → ``observe`` (cost,
traces, metrics, reports) → ``serve`` (HTTP server) and ``cli`` (the command line).
"""

import typing as _typing

from .exceptions import (
    ConfigurableAgentsError,
    InputError,
    Issue,
    MaxStepsExceededError,
    MissingExtraError,
    NodeTimeoutError,
    OutputValidationError,
    ProviderError,
    QualityGateError,
    RoutingError,
    RunError,
    RunInterruptedError,
    UserError,
    WorkflowFileError,
    WorkflowValidationError,
)

if _typing.TYPE_CHECKING:
    from .compile import CompiledWorkflow, compile_workflow
    from .config import LoadedWorkflow, Workflow, load_workflow, load_workflow_text
    from .observe import CostSummary, flush, summarize_cost
    from .providers import check_environment
    from .run import NodeRun, RunResult, TokenUsage, run_workflow

# Heavy parts (LangGraph, LangChain) load on first use, so `configurable-agents --help` is fast.
_LAZY = {
    "CompiledWorkflow": "compile",
    "compile_workflow": "compile",
    "LoadedWorkflow": "config",
    "Workflow": "config",
    "check_environment": "providers",
    "load_workflow": "config",
    "load_workflow_text": "config",
    "CostSummary": "observe",
    "flush": "observe",
    "summarize_cost": "observe",
    "NodeRun": "run",
    "RunResult": "run",
    "TokenUsage": "run",
    "run_workflow": "run",
}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"


def _install_observer() -> None:
    """The composition root: runs report to the observability layer through ``run.hooks``
    (so ``run`` never imports ``observe``)."""
    from .observe.dispatch import OBSERVER
    from .run import hooks

    if hooks.observer() is None:
        hooks.install(OBSERVER)


_install_observer()

__all__ = [
    "CompiledWorkflow",
    "ConfigurableAgentsError",
    "CostSummary",
    "InputError",
    "Issue",
    "LoadedWorkflow",
    "MaxStepsExceededError",
    "MissingExtraError",
    "NodeRun",
    "NodeTimeoutError",
    "OutputValidationError",
    "ProviderError",
    "QualityGateError",
    "RoutingError",
    "RunError",
    "RunInterruptedError",
    "RunResult",
    "TokenUsage",
    "UserError",
    "Workflow",
    "WorkflowFileError",
    "WorkflowValidationError",
    "__version__",
    "check_environment",
    "compile_workflow",
    "flush",
    "load_workflow",
    "load_workflow_text",
    "run_workflow",
    "summarize_cost",
]

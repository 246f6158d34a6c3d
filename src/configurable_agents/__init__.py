"""configurable-agents: LLM workflows in one YAML file, run on LangGraph, observable.

Architecture, in folder order: ``config`` (file format, loading, validation) → ``compile``
(to a LangGraph graph) → ``run`` (executor, inputs, results), with ``providers`` (one module
per chat-model provider) and ``tools`` (the tool registry). ``cli`` is the command line.
"""

from .compile import CompiledWorkflow, compile_workflow
from .config import LoadedWorkflow, Workflow, check_environment, load_workflow, load_workflow_text
from .exceptions import (
    ConfigurableAgentsError,
    InputError,
    Issue,
    MaxStepsExceededError,
    MissingExtraError,
    NodeTimeoutError,
    OutputValidationError,
    ProviderError,
    RoutingError,
    RunError,
    UserError,
    WorkflowFileError,
    WorkflowValidationError,
)
from .run import NodeRun, RunResult, TokenUsage, run_workflow

__version__ = "0.1.0"

__all__ = [
    "CompiledWorkflow",
    "ConfigurableAgentsError",
    "InputError",
    "Issue",
    "LoadedWorkflow",
    "MaxStepsExceededError",
    "MissingExtraError",
    "NodeRun",
    "NodeTimeoutError",
    "OutputValidationError",
    "ProviderError",
    "RoutingError",
    "RunError",
    "RunResult",
    "TokenUsage",
    "UserError",
    "Workflow",
    "WorkflowFileError",
    "WorkflowValidationError",
    "__version__",
    "check_environment",
    "compile_workflow",
    "load_workflow",
    "load_workflow_text",
    "run_workflow",
]

"""The workflow file: its pydantic schema, the YAML loader with line numbers, validation.

The bottom layer: it imports no other part of configurable-agents but ``tools`` (to check
tool names) and ``exceptions``. Whether this machine can run a workflow's providers is
``providers.check_environment``'s to say.
"""

from .schema import SCHEMA_VERSION, Workflow, json_schema
from .validate import LoadedWorkflow, load_workflow, load_workflow_text

__all__ = [
    "SCHEMA_VERSION",
    "LoadedWorkflow",
    "Workflow",
    "json_schema",
    "load_workflow",
    "load_workflow_text",
]

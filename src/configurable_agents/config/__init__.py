"""The workflow file: its pydantic schema, the YAML loader with line numbers, validation."""

from .schema import SCHEMA_VERSION, Workflow, json_schema
from .validate import LoadedWorkflow, check_environment, load_workflow, load_workflow_text

__all__ = [
    "SCHEMA_VERSION",
    "LoadedWorkflow",
    "Workflow",
    "check_environment",
    "json_schema",
    "load_workflow",
    "load_workflow_text",
]

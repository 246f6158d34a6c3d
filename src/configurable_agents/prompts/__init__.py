"""Node prompts kept in the MLflow Prompt Registry: loading ``prompt_ref`` (``registry``) and
registering a workflow's inline prompts (``push``)."""

from .registry import (
    LoadedPrompt,
    PromptRegistryError,
    ResolvedPrompt,
    clear_cache,
    parse_registry_template,
    resolve_prompts,
)

__all__ = [
    "LoadedPrompt",
    "PromptRegistryError",
    "ResolvedPrompt",
    "clear_cache",
    "parse_registry_template",
    "resolve_prompts",
]

"""Node prompts kept in the MLflow Prompt Registry: loading ``prompt_ref`` (``registry``) and
registering a workflow's inline prompts (``push``)."""

from .registry import (
    ALIAS_TTL_ENV,
    ALIAS_TTL_SECONDS,
    LoadedPrompt,
    PromptRegistryError,
    PromptSource,
    ResolvedPrompt,
    alias_ttl,
    clear_cache,
    parse_registry_template,
    resolve_prompts,
)

__all__ = [
    "ALIAS_TTL_ENV",
    "ALIAS_TTL_SECONDS",
    "LoadedPrompt",
    "PromptRegistryError",
    "PromptSource",
    "ResolvedPrompt",
    "alias_ttl",
    "clear_cache",
    "parse_registry_template",
    "resolve_prompts",
]

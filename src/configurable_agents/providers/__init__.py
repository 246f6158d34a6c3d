"""Chat-model providers, one module each; ``PROVIDERS`` maps a provider name to its info.

A new provider is a module here with a ``create(llm) -> BaseChatModel`` function and an
``INFO = ProviderInfo(...)`` entry (package, extra, API-key variables, tool support), added to
``PROVIDERS`` below and to ``config.schema.Provider``.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from ..exceptions import MissingExtraError
from . import anthropic, google, local, ollama, openai, test
from .base import ProviderInfo, StructuredReply, invoke_structured, structured_runnable

__all__ = [
    "PROVIDERS",
    "ProviderInfo",
    "StructuredReply",
    "create_chat_model",
    "invoke_structured",
    "merge_llm",
    "structured_runnable",
]

PROVIDERS: dict[str, ProviderInfo] = {
    p.INFO.name: p.INFO for p in (local, test, google, openai, anthropic, ollama)
}
DEFAULT_PROVIDER = "local"


def merge_llm(base: LLMConfig, override: LLMConfig | None) -> LLMConfig:
    """A node's effective LLM settings: its own ``llm`` keys over ``config.llm``."""
    merged = base.model_dump()
    if override is not None:
        merged.update(override.model_dump(exclude_unset=True))
    if (
        override is not None
        and "provider" in override.model_fields_set
        and "model" not in override.model_fields_set
        and override.provider != base.provider
    ):
        merged["model"] = None  # a different provider does not inherit the model name
    merged["provider"] = merged["provider"] or DEFAULT_PROVIDER
    return LLMConfig(**merged)


def create_chat_model(llm: LLMConfig) -> BaseChatModel:
    """Build the LangChain chat model for fully merged settings."""
    info = PROVIDERS[llm.provider or DEFAULT_PROVIDER]
    try:
        return info.create(llm)
    except ImportError as exc:
        if info.package and info.extra:
            raise MissingExtraError(info.package, info.extra, f"provider '{info.name}'") from exc
        raise

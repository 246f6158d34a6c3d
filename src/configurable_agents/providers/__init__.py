"""Chat-model providers, one module each; ``PROVIDERS`` maps a provider name to its info.

A new provider is a module here with a ``create(llm) -> BaseChatModel`` function (its class's
arguments from ``base.model_kwargs``) and an ``INFO = ProviderInfo(...)`` entry (package,
extra, API-key variables, tool support, ``native_async``), added to ``PROVIDERS`` below and to
``config.schema.Provider`` (and ``TOOL_PROVIDERS`` when it calls tools).
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import DEFAULT_PROVIDER, LLMConfig, merge_llm
from ..exceptions import MissingExtraError
from . import anthropic, google, local, ollama, openai, test
from .base import ProviderInfo, StructuredReply, invoke_structured, structured_runnable
from .environment import check_environment

__all__ = [
    "PROVIDERS",
    "ProviderInfo",
    "StructuredReply",
    "check_environment",
    "create_chat_model",
    "invoke_structured",
    "merge_llm",
    "structured_runnable",
]

PROVIDERS: dict[str, ProviderInfo] = {
    p.INFO.name: p.INFO for p in (local, test, google, openai, anthropic, ollama)
}


def create_chat_model(llm: LLMConfig) -> BaseChatModel:
    """Build the LangChain chat model for fully merged settings."""
    info = PROVIDERS[llm.provider or DEFAULT_PROVIDER]
    try:
        return info.create(llm)
    except ImportError as exc:
        if info.package and info.extra:
            raise MissingExtraError(info.package, info.extra, f"provider '{info.name}'") from exc
        raise

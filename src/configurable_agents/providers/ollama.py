"""The ``ollama`` provider: models served by a local Ollama daemon (no API key)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import COMMON, ProviderInfo, model_kwargs


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_ollama import ChatOllama

    names = {**COMMON, "max_tokens": "num_predict", "base_url": "base_url", "seed": "seed"}
    model: BaseChatModel = ChatOllama(**model_kwargs(llm, names, {"model": INFO.default_model}))
    return model


INFO = ProviderInfo(
    name="ollama",
    module="langchain_ollama",
    package="langchain-ollama",
    extra="ollama",
    api_key_env=(),
    default_model="llama3.2",
    supports_tools=True,
    create=create,
    native_async=True,
)

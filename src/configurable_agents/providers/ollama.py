"""The ``ollama`` provider: models served by a local Ollama daemon (no API key)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import ProviderInfo


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_ollama import ChatOllama

    kwargs: dict[str, object] = {"model": llm.model or INFO.default_model}
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    if llm.max_tokens is not None:
        kwargs["num_predict"] = llm.max_tokens
    if llm.base_url:
        kwargs["base_url"] = llm.base_url
    if llm.seed is not None:
        kwargs["seed"] = llm.seed
    model: BaseChatModel = ChatOllama(**kwargs)
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
)

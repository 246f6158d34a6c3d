"""The ``openai`` provider: OpenAI (or any OpenAI-compatible server via ``base_url``)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import ProviderInfo


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, object] = {"model": llm.model or INFO.default_model}
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    if llm.max_tokens is not None:
        kwargs["max_completion_tokens"] = llm.max_tokens
    if llm.base_url:
        kwargs["base_url"] = llm.base_url
    if llm.seed is not None:
        kwargs["seed"] = llm.seed
    model: BaseChatModel = ChatOpenAI(**kwargs)
    return model


INFO = ProviderInfo(
    name="openai",
    module="langchain_openai",
    package="langchain-openai",
    extra="openai",
    api_key_env=("OPENAI_API_KEY",),
    default_model="gpt-4o-mini",
    supports_tools=True,
    create=create,
)

"""The ``openai`` provider: OpenAI (or any OpenAI-compatible server via ``base_url``)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import COMMON, ProviderInfo, model_kwargs


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    names = {
        **COMMON,
        "max_tokens": "max_completion_tokens",
        "base_url": "base_url",
        "seed": "seed",
    }
    kwargs = model_kwargs(llm, names, {"model": INFO.default_model}, max_retries=0)
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
    native_async=True,
)

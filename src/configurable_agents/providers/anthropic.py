"""The ``anthropic`` provider: Claude through ``langchain-anthropic``."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import COMMON, ProviderInfo, model_kwargs


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_anthropic import ChatAnthropic

    names = {**COMMON, "max_tokens": "max_tokens"}
    defaults = {"model": INFO.default_model, "max_tokens": 1024}
    model: BaseChatModel = ChatAnthropic(**model_kwargs(llm, names, defaults, max_retries=0))
    return model


INFO = ProviderInfo(
    name="anthropic",
    module="langchain_anthropic",
    package="langchain-anthropic",
    extra="anthropic",
    api_key_env=("ANTHROPIC_API_KEY",),
    default_model="claude-haiku-4-5",
    supports_tools=True,
    create=create,
    native_async=True,
)

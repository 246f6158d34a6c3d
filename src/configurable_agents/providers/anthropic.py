"""The ``anthropic`` provider: Claude through ``langchain-anthropic``."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import ProviderInfo


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_anthropic import ChatAnthropic

    kwargs: dict[str, object] = {
        "model": llm.model or INFO.default_model,
        "max_tokens": llm.max_tokens or 1024,
    }
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    model: BaseChatModel = ChatAnthropic(**kwargs)
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
)

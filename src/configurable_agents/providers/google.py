"""The ``google`` provider: Gemini through ``langchain-google-genai``."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import ProviderInfo


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_google_genai import ChatGoogleGenerativeAI

    kwargs: dict[str, object] = {"model": llm.model or INFO.default_model}
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    if llm.max_tokens is not None:
        kwargs["max_output_tokens"] = llm.max_tokens
    model: BaseChatModel = ChatGoogleGenerativeAI(**kwargs)
    return model


INFO = ProviderInfo(
    name="google",
    module="langchain_google_genai",
    package="langchain-google-genai",
    extra="google",
    api_key_env=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    default_model="gemini-2.5-flash",
    supports_tools=True,
    create=create,
)

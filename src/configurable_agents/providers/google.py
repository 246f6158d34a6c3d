"""The ``google`` provider: Gemini through ``langchain-google-genai``."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from ..config.schema import LLMConfig
from .base import COMMON, ProviderInfo, model_kwargs


def create(llm: LLMConfig) -> BaseChatModel:
    from langchain_google_genai import ChatGoogleGenerativeAI

    names = {**COMMON, "max_tokens": "max_output_tokens"}
    kwargs = model_kwargs(llm, names, {"model": INFO.default_model}, max_retries=0)
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
    native_async=True,
)

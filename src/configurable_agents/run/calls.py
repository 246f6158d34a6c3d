"""One model call of a node, as the run records it: cancellable, retried after transient
provider errors, and every attempt an ``LLMCall`` on the node's record.

Retries follow the node's ``RetryPolicy`` (LangGraph's, built from ``config.execution.retry``
by ``compile``): up to ``max_attempts`` tries of the failed call only, waiting
``initial_interval × backoff_factor ** (retry - 1)`` seconds between them, at most
``max_interval``, as LangGraph's node retries wait; ``jitter`` lengthens each wait by up to half
at random (LangGraph adds up to a second, which would make ``backoff: 0`` wait too). Retrying
the call rather than the whole node (LangGraph's ``add_node(retry_policy=...)``) keeps the
node's earlier calls and tool results, and puts every attempt on the node's span: a failed
attempt is an ``LLMCall`` with ``error`` ("Type: message") and ``transient_error`` (its kind)
set and no tokens. The wait ends early when the node times out, and a timed-out node starts no
new attempt.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..exceptions import ProviderError
from ..providers.base import StructuredReply, structured_reply
from ..providers.calls import CallCancelled, invoke
from ..providers.errors import classify_error
from .context import RunAbandoned
from .result import LLMCall, NodeRun, TokenUsage

if TYPE_CHECKING:
    from langgraph.types import RetryPolicy

    from ..compile.plan import CompiledNode
    from .context import RunContext

Kind = Literal["tools", "structured"]


def call_model(
    node: CompiledNode,
    ctx: RunContext,
    record: NodeRun,
    kind: Kind,
    runnable: Runnable[Any, Any],
    messages: list[BaseMessage],
    config: RunnableConfig,
    check: Callable[[Any], str | None] | None = None,
    *,
    text: bool = False,
) -> tuple[Any, LLMCall]:
    """Ask the model; return its reply (an ``AIMessage``, or a ``StructuredReply`` when
    ``kind`` is ``structured``, unless ``text``: a free-text answer to a structured request,
    as ``per_field`` asks for prose) and the recorded call. ``check(reply)`` says why a reply
    is invalid (``LLMCall.error``) before the call is recorded."""
    policy = node.retry
    scope = ctx.scope(node.id)
    attempt = 0
    while True:
        attempt += 1
        sent = list(messages)
        failure: Exception | None = None
        budget = ctx.budget
        reservation = budget.reserve(node, sent, kind) if budget is not None else None
        ctx.begin_call(node.id)
        started_ns, started = time.time_ns(), time.perf_counter()
        call = _failed(record, kind, sent, started_ns, started, None)  # until it ends
        try:
            out = invoke(runnable, sent, config, scope, native_async=node.provider.native_async)
            reply = structured_reply(out) if kind == "structured" and not text else out
            call = _succeeded(record, kind, reply, sent, started_ns, started)
            if check is not None:
                call.error = check(reply)
        except CallCancelled as exc:
            failure = exc
            call = _failed(record, kind, sent, started_ns, started, exc)
            call.cancelled, call.error = True, str(exc)
            call.usage.add(exc.usage)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - recorded; classify_error says if transient
            failure = exc
            call = _failed(record, kind, sent, started_ns, started, exc)
            call.transient_error = classify_error(exc)
        finally:
            if budget is not None and reservation is not None:
                budget.settle(reservation, call.model or record.model, call.provider, call.usage)
            recorded = ctx.end_call(record, call)
        if not recorded or isinstance(failure, CallCancelled):
            raise RunAbandoned(f"node '{node.id}': the run already ended", node=node.id)
        if failure is None:
            return reply, call
        if (
            not (call.transient_error and _retries(policy, failure))
            or attempt >= policy.max_attempts
        ):
            tries = f" ({attempt} attempts)" if attempt > 1 else ""
            raise ProviderError(
                f"node '{node.id}': provider '{node.provider.name}' failed{tries}: "
                f"{type(failure).__name__}: {failure}",
                node=node.id,
            ) from failure
        record.provider_retries += 1
        if ctx.cancel.wait(_backoff(policy, attempt)):
            raise RunAbandoned(f"node '{node.id}': the run already ended", node=node.id)


def _retries(policy: RetryPolicy, exc: Exception) -> bool:
    """``policy.retry_on`` as LangGraph reads it: exception classes, or a predicate."""
    retry_on = policy.retry_on
    if isinstance(retry_on, type):
        return isinstance(exc, retry_on)
    if isinstance(retry_on, Sequence):
        return isinstance(exc, tuple(retry_on))
    return bool(retry_on(exc))


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``."""
    wait = min(
        policy.max_interval, policy.initial_interval * policy.backoff_factor ** (attempt - 1)
    )
    return wait * random.uniform(1, 1.5) if policy.jitter else wait


def _succeeded(
    record: NodeRun,
    kind: Kind,
    reply: AIMessage | StructuredReply,
    sent: list[BaseMessage],
    started_ns: int,
    started: float,
) -> LLMCall:
    message = reply.raw if isinstance(reply, StructuredReply) else reply
    usage = TokenUsage()
    usage.add(message.usage_metadata)  # type: ignore[arg-type]
    name = (message.response_metadata or {}).get("model_name")
    shown = message.content if isinstance(message.content, str) else str(message.content)
    if isinstance(reply, StructuredReply) and not shown and reply.parsed is not None:
        shown = json.dumps(reply.parsed)
    return LLMCall(
        kind=kind,
        model=str(name) if name else record.model,
        provider=record.provider,
        started_ns=started_ns,
        duration_ms=(time.perf_counter() - started) * 1000,
        messages=sent,
        response=shown,
        usage=usage,
        tool_calls=[{"name": c["name"], "args": c["args"]} for c in message.tool_calls],
    )


def _failed(
    record: NodeRun,
    kind: Kind,
    sent: list[BaseMessage],
    started_ns: int,
    started: float,
    exc: BaseException | None,
) -> LLMCall:
    return LLMCall(
        kind=kind,
        model=record.model,
        provider=record.provider,
        started_ns=started_ns,
        duration_ms=(time.perf_counter() - started) * 1000,
        messages=sent,
        response="",
        error=f"{type(exc).__name__}: {exc}" if exc else "the call did not finish",
        failed=True,
    )

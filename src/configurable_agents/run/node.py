"""What one node does at run time.

Render the prompt from state → (tool loop, when the node has tools) → ask the model for the
node's ``output_schema`` through its native structured-output mechanism (``json_schema``), or
one field at a time (``per_field``, see ``run.fields``) → validate with
pydantic → on invalid output retry, feeding the error back, up to ``max_retries`` → return the
outputs as the state update. The whole node runs under its timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from ..exceptions import (
    ConfigurableAgentsError,
    OutputValidationError,
    ProviderError,
)
from ..providers import invoke_structured
from .result import LLMCall, NodeRun, TokenUsage, ToolCall

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode
    from .context import RunContext

MAX_TOOL_ROUNDS = 8


def make_node_function(node: CompiledNode) -> Callable[[dict[str, Any], RunnableConfig], dict]:
    def run_node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx: RunContext = config["configurable"]["ca_run"]
        record = ctx.start_node(node)
        started = time.perf_counter()
        try:
            updates = _execute(node, state, config, ctx, record)
        except BaseException as exc:
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            ctx.finish_node(record, time.perf_counter() - started)
            raise
        record.outputs = updates
        ctx.finish_node(record, time.perf_counter() - started, updates)
        return updates

    run_node.__name__ = node.id
    return run_node


def _execute(
    node: CompiledNode,
    state: dict[str, Any],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
) -> dict[str, Any]:
    prompt = node.template.render(state)
    record.prompt = prompt
    messages: list[BaseMessage] = [HumanMessage(prompt)]
    try:
        if node.tools:
            _tool_loop(node, messages, config, record)
        return _structured_output(node, messages, config, ctx, record)
    except ConfigurableAgentsError:
        raise
    except Exception as exc:
        raise ProviderError(
            f"node '{node.id}': provider '{node.provider.name}' failed: "
            f"{type(exc).__name__}: {exc}",
            node=node.id,
        ) from exc


def _account(
    record: NodeRun,
    kind: Literal["tools", "structured"],
    message: AIMessage,
    sent: list[BaseMessage],
    started_ns: int,
    started: float,
    shown: str | None = None,
) -> LLMCall:
    """Record one model call on the node (tokens as reported by the provider)."""
    usage = TokenUsage()
    usage.add(message.usage_metadata)  # type: ignore[arg-type]
    name = (message.response_metadata or {}).get("model_name")
    if name:
        record.model = str(name)
    if shown is None:
        shown = message.content if isinstance(message.content, str) else str(message.content)
    call = LLMCall(
        kind=kind,
        model=record.model,
        provider=record.provider,
        started_ns=started_ns,
        duration_ms=(time.perf_counter() - started) * 1000,
        messages=sent,
        response=shown,
        usage=usage,
        tool_calls=[{"name": c["name"], "args": c["args"]} for c in message.tool_calls],
    )
    record.llm_calls += 1
    record.usage.add(usage)
    record.calls.append(call)
    return call


def _tool_loop(
    node: CompiledNode, messages: list[BaseMessage], config: RunnableConfig, record: NodeRun
) -> None:
    by_name = {t.name: t for t in node.tools}
    bound = node.model.bind_tools(node.tools)
    for _ in range(MAX_TOOL_ROUNDS):
        sent = list(messages)
        started_ns, started = time.time_ns(), time.perf_counter()
        reply = bound.invoke(messages, config=config)
        assert isinstance(reply, AIMessage)
        _account(record, "tools", reply, sent, started_ns, started)
        messages.append(reply)
        if not reply.tool_calls:
            return
        for call in reply.tool_calls:
            started_ns, started = time.time_ns(), time.perf_counter()
            tool = by_name.get(call["name"])
            error = False
            if tool is None:
                result, error = f"error: no tool named {call['name']!r}", True
            else:
                try:
                    result = str(tool.invoke(call["args"], config=config))
                except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's to handle
                    result, error = f"error: {type(exc).__name__}: {exc}", True
            record.tool_calls.append(
                ToolCall(
                    call["name"],
                    dict(call["args"]),
                    result,
                    (time.perf_counter() - started) * 1000,
                    error,
                    started_ns,
                )
            )
            messages.append(
                ToolMessage(content=result, tool_call_id=call["id"] or "", name=call["name"])
            )


def _structured_output(
    node: CompiledNode,
    messages: list[BaseMessage],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
) -> dict[str, Any]:
    if node.structured_mode == "per_field":
        from .fields import per_field_output

        return per_field_output(node, messages, config, ctx, record)
    feedback: list[BaseMessage] = []
    while True:
        extra = (
            {"ca_node": node.id, "ca_visit": ctx.next_call(node.id)}
            if node.provider.name == "test"
            else {}
        )
        sent = messages + feedback
        started_ns, started = time.time_ns(), time.perf_counter()
        reply = invoke_structured(node.structured(), sent, config, **extra)
        shown = reply.raw.content if isinstance(reply.raw.content, str) else str(reply.raw.content)
        if not shown and reply.parsed is not None:
            shown = json.dumps(reply.parsed)
        call = _account(record, "structured", reply.raw, sent, started_ns, started, shown)
        record.responses.append(shown)
        error = reply.error
        if error is None:
            try:
                validated = node.output_model.model_validate(reply.parsed)
                data = validated.model_dump()
                return {name: data[name] for name in node.spec.outputs}
            except ValidationError as exc:
                error = _format_validation(exc)
        record.validation_errors.append(error)
        call.error = error
        if record.retries >= node.max_retries:
            raise OutputValidationError(
                f"node '{node.id}' returned invalid output {record.retries + 1} time(s); "
                f"last error: {error}",
                node=node.id,
                attempts=record.retries + 1,
            )
        record.retries += 1
        feedback = [
            HumanMessage(
                f"Your previous answer was:\n{shown}\n\nIt is invalid: {error}\n"
                "Answer again with only a JSON object that matches this schema:\n"
                + json.dumps(node.json_schema)
            )
        ]


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)

"""What one node does at run time.

Render the prompt from state → (tool loop, when the node has tools) → ask the model for the
node's ``output_schema`` through its native structured-output mechanism (``json_schema``), or
one field at a time (``per_field``, see ``run.fields``) → validate with
pydantic → on invalid output retry, feeding the error back, up to ``max_retries`` → return the
outputs as the state update. The whole node runs under its timeout; each model call goes
through ``run.calls`` (cancellable, retried after transient provider errors, recorded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from ..exceptions import (
    ConfigurableAgentsError,
    OutputValidationError,
    ProviderError,
)
from .calls import call_model
from .context import RunAbandoned
from .result import NodeRun, ToolCall

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode
    from ..config.template import Template
    from ..providers.base import StructuredReply
    from .context import RunContext

MAX_TOOL_ROUNDS = 8


def make_node_function(node: CompiledNode) -> Callable[[dict[str, Any], RunnableConfig], dict]:
    def run_node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx: RunContext = config["configurable"]["ca_run"]
        template, version = node.prompt()  # an alias prompt_ref: the version it names now
        record = ctx.start_node(node, version)
        started = time.perf_counter()
        try:
            updates = _execute(node, template, state, config, ctx, record)
            if node.gates:  # on_fail block / retry judges of this node
                from .judges import gate

                updates = gate(
                    node,
                    state,
                    config,
                    ctx,
                    record,
                    updates,
                    lambda feedback: _execute(node, template, state, config, ctx, record, feedback),
                )
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
    template: Template,
    state: dict[str, Any],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
    feedback: str | None = None,
) -> dict[str, Any]:
    """One attempt at the node's output with ``template`` (the visit's, ``node.prompt()``);
    ``feedback``: a failed judge's verdict on the last one (``run.judges``), sent after the
    prompt."""
    prompt = template.render(state)
    record.prompt = prompt
    messages: list[BaseMessage] = [HumanMessage(prompt)]
    if feedback:
        messages.append(HumanMessage(feedback))
    try:
        if node.tools:
            _tool_loop(node, messages, config, ctx, record)
        return _structured_output(node, messages, config, ctx, record)
    except ConfigurableAgentsError:
        raise
    except Exception as exc:
        raise ProviderError(
            f"node '{node.id}': provider '{node.provider.name}' failed: "
            f"{type(exc).__name__}: {exc}",
            node=node.id,
        ) from exc


def _tool_loop(
    node: CompiledNode,
    messages: list[BaseMessage],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
) -> None:
    by_name = {t.name: t for t in node.tools}
    bound = node.model.bind_tools(node.tools)
    for _ in range(MAX_TOOL_ROUNDS):
        reply, _ = call_model(node, ctx, record, "tools", bound, messages, config)
        assert isinstance(reply, AIMessage)
        messages.append(reply)
        if not reply.tool_calls:
            return
        for call in reply.tool_calls:
            if ctx.abandoned:  # the node timed out during an earlier tool: stop here
                raise RunAbandoned("the run already ended", node=node.id)
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
        sent = messages + feedback
        valid: dict[str, Any] = {}
        _, call = call_model(
            node,
            ctx,
            record,
            "structured",
            node.structured(),
            sent,
            config,
            check=partial(_check, node, outputs=valid),
        )
        shown = call.response
        record.responses.append(shown)
        if call.error is None:
            return valid
        error = call.error
        record.validation_errors.append(error)
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


def _check(node: CompiledNode, reply: StructuredReply, outputs: dict[str, Any]) -> str | None:
    """Validate a structured reply against the node's output model: fill ``outputs`` with the
    node's outputs, or return why the reply is invalid."""
    if reply.error is not None:
        return reply.error
    try:
        data = node.output_model.model_validate(reply.parsed).model_dump()
    except ValidationError as exc:
        return _format_validation(exc)
    outputs.update({name: data[name] for name in node.spec.outputs})
    return None


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)

"""The ``test`` provider: a deterministic chat model for offline workflow tests.

It never touches the network. Typed outputs are schema-valid defaults (``"test <field>"``,
0, 0.0, false, ``[]``) unless canned ``responses`` are given per node (used in order, the last
one repeating). Token usage is deterministic: input = words in the prompt messages, output =
words in the JSON it returns. ``model`` is reported as the model name, so ``provider: test,
model: gemini-2.5-flash`` prices a dry run at that model's list price. With tools bound, its
first reply calls every tool once (arguments from each parameter's first example), and its
next reply answers.

For tests of the run machinery: a canned response ``{__error__: <kind>}`` makes that call fail
with a provider error of that kind (``rate_limit`` 429, ``server_error`` 503, ``timeout``,
``connection``, or ``bad_request`` 400, which is not transient), and ``latency_ms`` simulates
the model's time per call; a node timeout cancels it, and the call then reports the prompt's
tokens as spent (``CallCancelled``). Which node calls, and how many structured calls it made in
this run, the model reads from the run's ``CallScope`` (``providers.calls``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from ..config.schema import LLMConfig
from .base import ProviderInfo, model_kwargs, parse_json_reply
from .calls import CallCancelled, current_scope

DEFAULT_MODEL = "test"
ERROR_KEY = "__error__"


class TestProviderError(Exception):
    """A provider error the ``test`` model raises for a canned ``{__error__: <kind>}``."""

    __test__ = False

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _error(kind: str) -> Exception:
    if kind == "timeout":
        return TimeoutError("test provider: simulated request timeout")
    if kind == "connection":
        return ConnectionError("test provider: simulated connection reset")
    status = {"rate_limit": 429, "server_error": 503}.get(kind, 400)
    return TestProviderError(f"test provider: simulated HTTP {status} ({kind})", status)


class TestChatModel(BaseChatModel):
    """Deterministic offline chat model (``provider: test``)."""

    __test__ = False  # not a pytest test class

    model_name: str = DEFAULT_MODEL
    responses: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    latency_ms: float = 0.0  # simulated time per call (load tests, benchmarks)

    @property
    def _llm_type(self) -> str:
        return "configurable-agents-test"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "test"
        params["ls_model_name"] = self.model_name
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        words_in = sum(len(_content_text(m).split()) for m in messages)
        scope = current_scope()
        if self.latency_ms:
            if scope is None:
                time.sleep(self.latency_ms / 1000)
            elif scope.token.wait(self.latency_ms / 1000):
                # cancelled by a node timeout: the prompt was read, nothing was written
                raise CallCancelled(usage={"input_tokens": words_in, "output_tokens": 0})
        tools = kwargs.get("tools")
        schema = kwargs.get("ca_schema")
        if tools and not any(isinstance(m, ToolMessage) for m in messages):
            calls = [
                {"name": t["function"]["name"], "args": _example_args(t), "id": f"call_{i}"}
                for i, t in enumerate(tools)
            ]
            text = json.dumps([{"name": c["name"], "args": c["args"]} for c in calls])
            message = AIMessage(content="", tool_calls=calls)
        elif schema is not None:
            if "ca_node" in kwargs:  # called by hand (bench/overhead.py), not by a run
                node, visit = kwargs["ca_node"], int(kwargs.get("ca_visit", 0))
            else:
                node = scope.node if scope else None
                visit = scope.count(f"test:{node}") if scope else 0
            value = self._canned(node, visit)
            if isinstance(value, dict) and ERROR_KEY in value:
                raise _error(str(value[ERROR_KEY]))
            if value is None:
                value = _default_for(schema, schema)
            text = json.dumps(value)
            message = AIMessage(content=text)
        else:
            text = "done"
            message = AIMessage(content=text)
        words_out = len(text.split())
        message.usage_metadata = {
            "input_tokens": words_in,
            "output_tokens": words_out,
            "total_tokens": words_in + words_out,
        }
        message.response_metadata = {"model_name": self.model_name, "finish_reason": "stop"}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _canned(self, node: str | None, visit: int) -> Any:
        answers = self.responses.get(node or "") if node else None
        if not answers:
            return None
        return answers[min(visit, len(answers) - 1)]

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Any | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        specs = []
        for t in tools:
            spec = convert_to_openai_tool(t)
            schema = getattr(t, "args_schema", None)
            if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
                # keep each parameter's examples, which the OpenAI conversion drops
                spec["function"]["parameters"] = schema.model_json_schema()
            specs.append(spec)
        return self.bind(tools=specs, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self, schema: dict[str, Any], *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        bound = self.bind(ca_schema=schema)
        parse: Runnable[Any, Any] = RunnableLambda(lambda m: parse_json_reply(m).as_langchain())
        return bound | parse if include_raw else bound | parse | (lambda d: d["parsed"])


def _content_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(c if isinstance(c, str) else str(c.get("text", "")) for c in content)


def _example_args(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool["function"].get("parameters", {})
    args = {}
    for name, spec in params.get("properties", {}).items():
        if spec.get("examples"):
            args[name] = spec["examples"][0]
        elif name in params.get("required", []):
            args[name] = _default_for(spec, params, name)
    return args


def _default_for(spec: dict[str, Any], root: dict[str, Any], name: str = "") -> Any:
    """A schema-valid value: "test <field>" for strings, 0, 0.0, false, [] and nested objects,
    brought within the field's bounds (``minLength``/``maxLength``: padded with "x" or cut;
    ``minimum``/``maximum``: the nearest allowed number; ``minItems``: that many items)."""
    if "$ref" in spec:
        ref = spec["$ref"].rsplit("/", 1)[-1]
        return _default_for(root.get("$defs", {}).get(ref, {}), root, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in spec:
            return _default_for(spec[key][0], root, name)
    kind = spec.get("type", "object")
    if kind == "string":
        text = f"test {name}".strip()
        text = text.ljust(int(spec.get("minLength", 0)), "x")
        return text[: spec["maxLength"]] if "maxLength" in spec else text
    if kind in ("integer", "number"):
        low, high = spec.get("minimum"), spec.get("maximum")
        value: float = 0
        if low is not None and value < low:
            value = math.ceil(low) if kind == "integer" else low
        elif high is not None and value > high:
            value = math.floor(high) if kind == "integer" else high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "array":
        item = spec.get("items", {})
        return [_default_for(item, root, name) for _ in range(int(spec.get("minItems", 0)))]
    if kind == "object":
        props = spec.get("properties")
        if not props:
            return {}
        return {k: _default_for(v, root, k) for k, v in props.items()}
    return None


def create(llm: LLMConfig) -> BaseChatModel:
    names = {"model": "model_name", "responses": "responses", "latency_ms": "latency_ms"}
    return TestChatModel(**model_kwargs(llm, names, {"model": DEFAULT_MODEL}))


INFO = ProviderInfo(
    name="test",
    module=None,
    package=None,
    extra=None,
    api_key_env=(),
    default_model=DEFAULT_MODEL,
    supports_tools=True,
    create=create,
)

"""Node timeouts that stop the spending: the call in flight is cancelled, what it still spends
is recorded on the run (``after_timeout``), and the run's records never change afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from configurable_agents import NodeTimeoutError, compile_workflow, load_workflow, run_workflow
from configurable_agents.observe import summarize_cost
from configurable_agents.providers.test import TestChatModel
from configurable_agents.run import executor

from conftest import MINIMAL

PRICED = MINIMAL.replace(
    "  llm: {provider: test}", "  llm: {provider: test, model: gemini-2.5-flash}"
)


def with_node(text: str, extra: str) -> str:
    return text.replace("    outputs: [article]", "    outputs: [article]\n" + extra)


def snapshot(result: Any) -> str:
    return json.dumps(
        [n.to_dict(detail=True) | {"calls": len(n.calls)} for n in result.nodes], default=str
    )


def test_a_timeout_cancels_the_test_models_latency_and_records_the_spent_prompt(write_workflow):
    text = PRICED.replace("provider: test,", "provider: test, latency_ms: 20000,")
    path = write_workflow(with_node(text, "    timeout_seconds: 0.3"))
    started = time.perf_counter()
    result = run_workflow(path, {"topic": "bees"})
    assert time.perf_counter() - started < 2  # not the 20 s of latency
    assert isinstance(result.exception, NodeTimeoutError)
    [node] = result.nodes
    assert node.status == "failed" and 250 < node.duration_ms < 2000
    [call] = node.calls
    assert call.after_timeout and call.cancelled and call.failed
    assert "timed out" in (call.error or "")
    # the prompt "Write about bees." was read (3 tokens), nothing was written
    assert (call.usage.input_tokens, call.usage.output_tokens) == (3, 0)
    assert node.usage.input_tokens == 3 and result.usage.input_tokens == 3
    assert node.llm_calls == 1
    assert summarize_cost(result).total_usd > 0  # the spent prompt is priced too


TWO_NODES = """\
schema_version: "1.0"
flow: {name: two}
config:
  llm: {provider: test}
state:
  fields:
    topic: {type: str, required: true}
    a: {type: str, default: ""}
    b: {type: str, default: ""}
nodes:
  - id: first
    prompt: "A {topic}."
    outputs: [a]
    timeout_seconds: FIRST_T
    llm: {provider: test, latency_ms: FIRST_MS}
  - id: second
    prompt: "B {a}."
    outputs: [b]
    timeout_seconds: SECOND_T
    llm: {provider: test, latency_ms: SECOND_MS}
edges:
  - {from: START, to: first}
  - {from: first, to: second}
  - {from: second, to: END}
"""


@pytest.mark.parametrize(
    ("first", "second", "late"),
    [
        ((60, 500), (0.4, 20000), "second"),  # a deadline before the one watched wakes the watch
        ((0.4, 0), (60, 900), None),  # the first look (at the shortest timeout) finds a later one
        ((0.4, 0), (0.4, 20000), "second"),  # the same timeout again, later
        ((60, 300), (60, 300), None),
    ],
)
def test_each_nodes_deadline_is_kept_whatever_the_others_are(write_workflow, first, second, late):
    text = TWO_NODES
    for name, value in (
        ("FIRST_T", first[0]),
        ("FIRST_MS", first[1]),
        ("SECOND_T", second[0]),
        ("SECOND_MS", second[1]),
    ):
        text = text.replace(name, str(value))
    started = time.perf_counter()
    result = run_workflow(write_workflow(text), {"topic": "x"})
    took = time.perf_counter() - started
    if late is None:
        assert result.status == "succeeded", result.error
        assert took >= (first[1] + second[1]) / 1000
    else:
        assert isinstance(result.exception, NodeTimeoutError) and result.exception.node == late
        assert took < 3  # the 0.4 s deadline, not the 20 s of latency


def test_a_call_that_ends_after_the_timeout_is_recorded_with_its_tokens(
    write_workflow, monkeypatch
):
    generate = TestChatModel._generate

    def stubborn(self, messages, stop=None, run_manager=None, **kwargs):
        time.sleep(0.6)  # ignores the cancel, like a provider call that cannot be stopped
        return generate(self, messages, stop, run_manager, **kwargs)

    monkeypatch.setattr(TestChatModel, "_generate", stubborn)
    result = run_workflow(
        write_workflow(with_node(PRICED, "    timeout_seconds: 0.2")), {"topic": "x"}
    )
    assert isinstance(result.exception, NodeTimeoutError)
    [node] = result.nodes
    [call] = node.calls
    assert call.after_timeout and not call.cancelled and not call.failed and call.error is None
    assert call.usage.output_tokens == 3 and call.response == '{"article": "test article"}'
    assert node.usage.total_tokens == result.usage.total_tokens == call.usage.total_tokens == 6
    assert summarize_cost(result).by_node["write"] > 0
    assert node.outputs == {}  # the late answer does not become the node's output
    assert result.state == {"topic": "x", "article": ""}


def test_the_record_never_changes_after_the_run_returns(write_workflow, monkeypatch):
    calls: list[float] = []
    generate = TestChatModel._generate

    def counting(self, *args, **kwargs):
        calls.append(time.perf_counter())
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(TestChatModel, "_generate", counting)
    # the tool sleeps 0.8 s and cannot be stopped; after it the node would ask the model again
    path = write_workflow(
        with_node(PRICED, "    tools: ['sample_tools:nap']\n    timeout_seconds: 0.3")
    )
    started = time.perf_counter()
    result = run_workflow(path, {"topic": "x"})
    assert time.perf_counter() - started < 0.7  # no model call in flight: no wait for the tool
    assert isinstance(result.exception, NodeTimeoutError)
    before = snapshot(result)
    time.sleep(1.2)  # the tool returns meanwhile and the worker winds down
    assert snapshot(result) == before
    assert len(calls) == 1  # the tool round only: nothing was asked after the timeout
    [node] = result.nodes
    assert node.tool_calls == [] and len(node.calls) == 1


def test_a_call_still_running_long_after_the_timeout_is_named_in_a_warning(
    write_workflow, monkeypatch, caplog
):
    generate = TestChatModel._generate

    def hung(self, messages, stop=None, run_manager=None, **kwargs):
        time.sleep(1.0)
        return generate(self, messages, stop, run_manager, **kwargs)

    monkeypatch.setattr(TestChatModel, "_generate", hung)
    monkeypatch.setattr(executor, "LATE_CALL_WAIT_SECONDS", 0.2)
    with caplog.at_level(logging.WARNING, logger="configurable_agents.run"):
        result = run_workflow(
            write_workflow(with_node(PRICED, "    timeout_seconds: 0.2")), {"topic": "x"}
        )
    assert "node 'write' timed out, and its model call was still running" in caplog.text
    before = snapshot(result)
    time.sleep(1.2)
    assert snapshot(result) == before and result.nodes[0].calls == []


class AsyncOnlyModel(TestChatModel):
    """A model whose call only ends when cancelled, through its async API (like an HTTP
    provider's ``ainvoke``); records that it was cancelled."""

    __test__ = False
    cancelled: Any = None  # threading.Event

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return ChatResult(generations=[ChatGeneration(message=AIMessage("late"))])


def _async_provider(compiled: Any, model: Any) -> None:
    node = compiled.nodes["write"]
    node.model = model
    node.provider = dataclasses.replace(node.provider, native_async=True)


def test_a_timeout_cancels_an_async_call(write_workflow):
    compiled = compile_workflow(
        load_workflow(write_workflow(with_node(PRICED, "    timeout_seconds: 0.3")))
    )
    model = AsyncOnlyModel(cancelled=threading.Event())
    _async_provider(compiled, model)
    started = time.perf_counter()
    result = run_workflow(compiled, {"topic": "x"})
    assert time.perf_counter() - started < 2
    assert isinstance(result.exception, NodeTimeoutError)
    assert model.cancelled.wait(2), "the async call was not cancelled"
    [call] = result.nodes[0].calls
    assert call.cancelled and call.after_timeout and call.usage.total_tokens == 0


class _SilentServer:
    """A TCP server on 127.0.0.1 that reads a request, never answers, and notes when the client
    closes the connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            data = conn.recv(65536)
            if data:
                self.received.set()
            try:
                while conn.recv(65536):
                    pass
                self.closed.set()  # EOF: the client closed the request
            except (TimeoutError, OSError):
                pass

    def close(self) -> None:
        self.sock.close()


class HttpModel(TestChatModel):
    """A chat model that posts to ``url`` with httpx's async client, like the hosted ones."""

    __test__ = False
    url: str = ""

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(self.url, json={"messages": [m.content for m in messages]})
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply.text))])


def test_a_timeout_closes_the_http_request(write_workflow):
    server = _SilentServer()
    try:
        compiled = compile_workflow(
            load_workflow(write_workflow(with_node(PRICED, "    timeout_seconds: 0.5")))
        )
        _async_provider(compiled, HttpModel(url=f"http://127.0.0.1:{server.port}/v1/chat"))
        result = run_workflow(compiled, {"topic": "x"})
        assert isinstance(result.exception, NodeTimeoutError)
        assert server.received.is_set(), "the request never reached the server"
        assert server.closed.wait(3), "the HTTP request was left open after the timeout"
        [call] = result.nodes[0].calls
        assert call.cancelled and call.after_timeout
    finally:
        server.close()
        server.thread.join(5)


def test_async_providers_still_answer(write_workflow):
    class Echo(TestChatModel):
        __test__ = False

        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            return self._generate(messages, stop, None, **kwargs)

    compiled = compile_workflow(load_workflow(write_workflow(PRICED)))
    _async_provider(compiled, Echo(model_name="gemini-2.5-flash"))
    for topic in ("a", "b"):
        result = run_workflow(compiled, {"topic": topic})
        assert result.succeeded and result.outputs == {"article": "test article"}
        assert result.nodes[0].usage.total_tokens == 6


@pytest.mark.parametrize("latency", [0, 50])
def test_no_timeout_no_late_calls(write_workflow, latency):
    text = PRICED.replace("provider: test,", f"provider: test, latency_ms: {latency},")
    result = run_workflow(write_workflow(text), {"topic": "x"})
    assert result.succeeded
    assert [(c.after_timeout, c.cancelled) for c in result.nodes[0].calls] == [(False, False)]


LOCAL = """\
schema_version: "1.0"
flow: {name: long_story}
config:
  llm: {provider: local, temperature: 0, seed: 1, max_tokens: 2000}
state:
  fields:
    topic: {type: str, required: true}
    story: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write a very long story, many pages, about {topic}."
    outputs: [story]
    timeout_seconds: 0.4
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


@pytest.mark.local_model
def test_a_timeout_stops_a_local_generation(write_workflow):
    pytest.importorskip("llama_cpp", reason='needs: pip install "configurable-agents[local]"')
    compiled = compile_workflow(load_workflow(write_workflow(LOCAL)))
    model = compiled.nodes["write"].model
    model.load()  # load Gemma outside the node's 0.4 s
    started = time.perf_counter()
    result = run_workflow(compiled, {"topic": "a lighthouse keeper"})
    elapsed = time.perf_counter() - started
    assert isinstance(result.exception, NodeTimeoutError), result.outputs
    # llama.cpp stops at the next token: a few seconds at most on a busy machine, where
    # 2000 tokens take many minutes (and the executor waits at most LATE_CALL_WAIT_SECONDS)
    assert elapsed < 0.4 + executor.LATE_CALL_WAIT_SECONDS, elapsed
    [call] = result.nodes[0].calls  # recorded: the generation did stop
    assert call.cancelled and call.after_timeout
    assert call.usage.input_tokens > 0 and call.usage.output_tokens < 100
    assert result.usage.output_tokens == call.usage.output_tokens
    # the shared model is still usable after the stop
    reply = model.bind(max_tokens=8).invoke("Say hello.")
    assert reply.usage_metadata["output_tokens"] > 0

"""Retries of model calls after transient provider errors: the config, the error kinds, the
attempts on the run record (``config.execution.retry``, canned ``{__error__: <kind>}``)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from configurable_agents import (
    ProviderError,
    WorkflowValidationError,
    compile_workflow,
    load_workflow,
    run_workflow,
)
from configurable_agents.providers.errors import classify_error
from configurable_agents.providers.test import TestChatModel, TestProviderError

from conftest import MINIMAL

WORKFLOW = """\
schema_version: "1.0"
flow: {name: retrying}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      score: RESPONSES
  execution:
    retry: RETRY
state:
  fields:
    topic: {type: str, required: true}
    value: {type: int, default: 0}
nodes:
  - id: score
    prompt: "Score {topic}."
    outputs: [value]
    output_schema: {fields: [{name: value, type: int}]}
edges:
  - {from: START, to: score}
  - {from: score, to: END}
"""
FAST = {"attempts": 3, "backoff": {"initial": 0, "jitter": False}}


def workflow(write_workflow, responses: list[Any], retry: dict[str, Any] | str = FAST):
    text = WORKFLOW.replace("RESPONSES", json.dumps(responses))
    return write_workflow(
        text.replace("RETRY", retry if isinstance(retry, str) else json.dumps(retry))
    )


# --- the attempts on the record ------------------------------------------------------------


def test_transient_errors_are_retried_and_every_attempt_is_recorded(write_workflow):
    path = workflow(
        write_workflow, [{"__error__": "rate_limit"}, {"__error__": "server_error"}, {"value": 7}]
    )
    result = run_workflow(path, {"topic": "x"})
    assert result.succeeded, result.error
    assert result.outputs == {"value": 7}
    [node] = result.nodes
    assert node.provider_retries == 2 and node.retries == 0
    assert node.llm_calls == 3 and len(node.calls) == 3
    first, second, last = node.calls
    assert first.transient_error == "rate_limit" and "HTTP 429" in (first.error or "")
    assert first.error.startswith("TestProviderError: ")
    assert second.transient_error == "server_error" and "HTTP 503" in (second.error or "")
    assert (first.usage.total_tokens, second.usage.total_tokens) == (0, 0)  # nothing reported
    assert last.error is None and last.transient_error is None and last.response == '{"value": 7}'
    assert (first.failed, second.failed, last.failed) == (True, True, False)
    assert node.usage.total_tokens == last.usage.total_tokens > 0
    assert not node.validation_errors  # provider errors are not invalid outputs
    assert node.to_dict()["provider_retries"] == 2


def test_attempts_run_out_and_the_run_fails_with_the_provider_error(write_workflow):
    retry = {**FAST, "attempts": 2}
    result = run_workflow(
        workflow(write_workflow, [{"__error__": "rate_limit"}], retry), {"topic": "x"}
    )
    assert isinstance(result.exception, ProviderError)
    assert result.error is not None and result.error.node == "score"
    assert "failed (2 attempts): TestProviderError: test provider: simulated HTTP 429" in (
        result.error.message
    )
    [node] = result.nodes
    assert node.status == "failed" and node.provider_retries == 1
    assert [c.transient_error for c in node.calls] == ["rate_limit", "rate_limit"]


@pytest.mark.parametrize(
    ("responses", "retry"),
    [
        ([{"__error__": "bad_request"}, {"value": 1}], FAST),  # a 400 is not transient
        ([{"__error__": "rate_limit"}, {"value": 1}], {**FAST, "on": ["server_error"]}),
        ([{"__error__": "timeout"}, {"value": 1}], {**FAST, "attempts": 1}),
    ],
)
def test_errors_not_retried(write_workflow, responses, retry):
    result = run_workflow(workflow(write_workflow, responses, retry), {"topic": "x"})
    assert isinstance(result.exception, ProviderError)
    assert "attempts" not in (result.error.message if result.error else "")
    [node] = result.nodes
    assert node.provider_retries == 0 and len(node.calls) == 1


def test_each_kind_of_simulated_error_is_retried_by_default(write_workflow):
    errors = [{"__error__": k} for k in ("timeout", "connection")]
    result = run_workflow(
        workflow(write_workflow, [*errors, {"value": 2}], "{backoff: 0}"), {"topic": "x"}
    )
    assert result.succeeded, result.error
    assert [c.transient_error for c in result.nodes[0].calls] == ["timeout", "connection", None]
    assert (
        result.nodes[0].calls[0].error == "TimeoutError: test provider: simulated request timeout"
    )


def test_backoff_waits_between_attempts(write_workflow):
    retry = {"attempts": 3, "backoff": {"initial": 0.15, "multiplier": 2, "jitter": False}}
    path = workflow(write_workflow, [{"__error__": "rate_limit"}] * 2 + [{"value": 3}], retry)
    started = time.perf_counter()
    result = run_workflow(path, {"topic": "x"})
    assert result.succeeded
    assert time.perf_counter() - started >= 0.15 + 0.3
    first, second, third = result.nodes[0].calls
    assert (second.started_ns - first.started_ns) / 1e9 >= 0.15
    assert (third.started_ns - second.started_ns) / 1e9 >= 0.3


def test_a_node_timeout_ends_the_backoff(write_workflow):
    path = workflow(write_workflow, [{"__error__": "rate_limit"}, {"value": 3}], "{backoff: 30}")
    text = path.read_text().replace(
        "    outputs: [value]", "    outputs: [value]\n    timeout_seconds: 0.3"
    )
    path.write_text(text)
    started = time.perf_counter()
    result = run_workflow(path, {"topic": "x"})
    assert time.perf_counter() - started < 3
    assert result.error is not None and result.error.type == "NodeTimeoutError"
    [node] = result.nodes
    assert len(node.calls) == 1 and node.calls[0].transient_error == "rate_limit"


def test_canned_errors_use_up_their_place_in_the_order_per_run(write_workflow):
    compiled = compile_workflow(
        load_workflow(workflow(write_workflow, [{"__error__": "rate_limit"}, {"value": 5}]))
    )
    for _ in range(2):  # the second run starts the canned list again
        result = run_workflow(compiled, {"topic": "x"})
        assert result.succeeded and result.nodes[0].provider_retries == 1


def test_connection_error_from_a_provider_is_retried_then_reported(write_workflow, monkeypatch):
    calls: list[int] = []

    def boom(self, messages, stop=None, run_manager=None, **kwargs):
        calls.append(1)
        raise ConnectionError("service unavailable")

    monkeypatch.setattr(TestChatModel, "_generate", boom)
    text = MINIMAL.replace(
        "  llm: {provider: test}", "  llm: {provider: test}\n  execution: {retry: {backoff: 0}}"
    )
    result = run_workflow(write_workflow(text), {"topic": "x"})
    assert isinstance(result.exception, ProviderError)
    assert "failed (3 attempts): ConnectionError: service unavailable" in result.error.message
    assert len(calls) == 3 and result.nodes[0].provider_retries == 2


# --- the configuration -------------------------------------------------------------------


def test_retry_defaults_and_backoff_in_seconds(write_workflow):
    spec = load_workflow(write_workflow(MINIMAL)).spec
    retry = spec.config.execution.retry
    assert retry.attempts == 3 and retry.on == [
        "rate_limit",
        "server_error",
        "timeout",
        "connection",
    ]
    assert (retry.backoff.initial, retry.backoff.max, retry.backoff.multiplier) == (1, 30, 2)
    assert retry.backoff.jitter is True
    spec = load_workflow(workflow(write_workflow, [{"value": 1}], "{backoff: 0.5}")).spec
    assert spec.config.execution.retry.backoff.initial == 0.5
    policy = (
        compile_workflow(
            load_workflow(
                workflow(
                    write_workflow,
                    [{"value": 1}],
                    "{attempts: 5, backoff: {initial: 2, max: 8, multiplier: 3, jitter: false}}",
                )
            )
        )
        .nodes["score"]
        .retry
    )
    assert (policy.max_attempts, policy.initial_interval, policy.max_interval) == (5, 2, 8)
    assert (policy.backoff_factor, policy.jitter) == (3, False)


@pytest.mark.parametrize(
    ("retry", "message", "hint"),
    [
        (
            "{attempts: 0}",
            "config.execution.retry.attempts: input should be greater than or equal to 1",
            "use a value at least 1",
        ),
        ("{on: [rate_limits]}", "'rate_limits' is not allowed", "'rate_limit'"),
        ("{backoff: fast}", "'fast' is not a backoff", "backoff: 1.5"),
        (
            "{backoff: {initial: 5, max: 1}}",
            "backoff max (1 s) is shorter than its initial wait (5 s)",
            None,
        ),
        ("{backoff: {initail: 1}}", "unknown key 'initail'", "did you mean 'initial'?"),
        ("{retries: 2}", "unknown key 'retries'", "allowed keys here: attempts, backoff, on"),
    ],
)
def test_bad_retry_settings_are_reported_at_their_line(write_workflow, retry, message, hint):
    path = workflow(write_workflow, [{"value": 1}], retry)
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(path)
    [issue] = info.value.issues
    assert message in issue.message, issue
    assert issue.line == 10 and issue.file == str(path)  # the `retry:` line
    if hint:
        assert hint in (issue.hint or ""), issue


def test_unknown_simulated_error_is_reported(write_workflow):
    path = workflow(write_workflow, [{"__error__": "rate_limt"}])
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(path)
    [issue] = info.value.issues
    assert "'rate_limt' is not a simulated error" in issue.message
    assert issue.hint == "did you mean 'rate_limit'?" and issue.line == 8  # the score: line


def test_json_schema_accepts_backoff_in_seconds_or_as_a_mapping():
    from configurable_agents.config import json_schema

    schema = json_schema()
    backoff = schema["$defs"]["RetryConfig"]["properties"]["backoff"]
    kinds = {json.dumps(option, sort_keys=True) for option in backoff["anyOf"]}
    assert '{"type": "number"}' in kinds and any("BackoffConfig" in k for k in kinds)


# --- which errors are transient ------------------------------------------------------------

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=REQUEST)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ReadTimeout("read timed out", request=REQUEST), "timeout"),
        (httpx.ConnectTimeout("connect timed out", request=REQUEST), "timeout"),
        (httpx.ConnectError("connection refused", request=REQUEST), "connection"),
        (httpx.RemoteProtocolError("peer closed", request=REQUEST), "connection"),
        (httpx.HTTPStatusError("429", request=REQUEST, response=_response(429)), "rate_limit"),
        (httpx.HTTPStatusError("502", request=REQUEST, response=_response(502)), "server_error"),
        (httpx.HTTPStatusError("408", request=REQUEST, response=_response(408)), "timeout"),
        (httpx.HTTPStatusError("404", request=REQUEST, response=_response(404)), None),
        (TimeoutError("slow"), "timeout"),
        (ConnectionResetError("reset"), "connection"),
        (TestProviderError("529", 529), "server_error"),
        (TestProviderError("401", 401), None),
        (ValueError("not json"), None),
        (KeyError("model"), None),
    ],
)
def test_classify_httpx_and_builtin_errors(error, kind):
    assert classify_error(error) == kind


def test_classify_follows_wrapped_errors():
    try:
        try:
            raise httpx.HTTPStatusError("429", request=REQUEST, response=_response(429))
        except httpx.HTTPStatusError as inner:
            raise RuntimeError("the SDK gave up") from inner
    except RuntimeError as outer:
        assert classify_error(outer) == "rate_limit"
    wrapped_client_error = RuntimeError("wrapped")
    wrapped_client_error.__cause__ = TestProviderError("bad", 400)
    assert classify_error(wrapped_client_error) is None


def test_classify_openai_errors():
    openai = pytest.importorskip("openai")
    assert (
        classify_error(openai.RateLimitError("slow down", response=_response(429), body=None))
        == "rate_limit"
    )
    assert (
        classify_error(openai.InternalServerError("boom", response=_response(500), body=None))
        == "server_error"
    )
    assert classify_error(openai.APITimeoutError(request=REQUEST)) == "timeout"
    assert classify_error(openai.APIConnectionError(request=REQUEST)) == "connection"
    assert classify_error(openai.BadRequestError("bad", response=_response(400), body=None)) is None
    assert (
        classify_error(openai.AuthenticationError("key", response=_response(401), body=None))
        is None
    )


def test_classify_anthropic_errors():
    anthropic = pytest.importorskip("anthropic")
    assert (
        classify_error(anthropic.RateLimitError("slow", response=_response(429), body=None))
        == "rate_limit"
    )
    overloaded = anthropic.InternalServerError("overloaded", response=_response(529), body=None)
    assert classify_error(overloaded) == "server_error"
    assert classify_error(anthropic.APITimeoutError(request=REQUEST)) == "timeout"
    assert classify_error(anthropic.APIConnectionError(request=REQUEST)) == "connection"
    assert (
        classify_error(anthropic.NotFoundError("model", response=_response(404), body=None)) is None
    )

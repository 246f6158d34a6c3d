"""Tier 1: every run as one MLflow trace, written in the background to a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.observe.trace.spans import SequentialIds, build_trace

from conftest import EXAMPLES, FAILING, RETRY

mlflow = pytest.importorskip("mlflow")

# gemini-2.5-flash list price: $0.30 per million input tokens, $2.50 per million output tokens.
FLASH_IN, FLASH_OUT = 0.30e-6, 2.50e-6


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating one costs seconds of migrations)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("store") / "mlflow.db")


def compiled(path: Path, store: str, experiment: str, **mlflow_config: Any) -> ca.CompiledWorkflow:
    workflow = ca.compile_workflow(ca.load_workflow(path))
    config = workflow.workflow.spec.config.observability.mlflow
    config.enabled = True
    config.tracking_uri = store
    config.experiment_name = experiment
    for key, value in mlflow_config.items():
        setattr(config, key, value)
    return workflow


def traced_run(workflow: ca.CompiledWorkflow, inputs: dict[str, Any], **kwargs: Any) -> Any:
    result = ca.run_workflow(workflow, inputs, **kwargs)
    assert ca.flush(60)
    assert result.trace_error is None, result.trace_error
    ca.summarize_cost(result)  # the drainer priced its own copy
    return result


def read_trace(store: str, trace_id: str) -> Any:
    return mlflow.MlflowClient(store).get_trace(trace_id)


def tree(trace: Any) -> list[tuple[str, str, str | None]]:
    """(name, type, parent name) for every span, in start order."""
    by_id = {s.span_id: s for s in trace.data.spans}
    spans = sorted(trace.data.spans, key=lambda s: (s.start_time_ns, s.span_id))
    return [(s.name, s.span_type, by_id[s.parent_id].name if s.parent_id else None) for s in spans]


def test_span_tree_is_deterministic_with_sequential_ids():
    workflow = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    result = ca.run_workflow(workflow, {"topic": "bees"})
    ca.summarize_cost(result)
    record = build_trace(workflow, result, ids=SequentialIds())
    shape = [(s.span_id, s.parent_id, s.name, s.span_type) for s in record.spans]
    assert shape == [
        (1, None, "workflow_review_loop", "WORKFLOW"),
        (2, 1, "write", "AGENT"),
        (3, 2, "chat gemini-2.5-flash", "CHAT_MODEL"),
        (4, 1, "review", "AGENT"),
        (5, 4, "chat gemini-2.5-flash", "CHAT_MODEL"),
        (6, 1, "write", "AGENT"),
        (7, 6, "chat gemini-2.5-flash", "CHAT_MODEL"),
        (8, 1, "review", "AGENT"),
        (9, 8, "chat gemini-2.5-flash", "CHAT_MODEL"),
    ]
    root = record.root.attributes
    assert (root["workflow_name"], root["workflow_version"], root["node_count"]) == (
        "review_loop",
        "1.0.0",
        2,
    )


def test_trace_has_the_span_model_tokens_and_exact_cost(store):
    workflow = compiled(EXAMPLES / "review_loop.yaml", store, "span-model")
    result = traced_run(workflow, {"topic": "bees"}, tags={"user": "ana", "team": "search"})
    trace = read_trace(store, result.trace_id)
    assert tree(trace) == [
        ("workflow_review_loop", "WORKFLOW", None),
        ("write", "AGENT", "workflow_review_loop"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "write"),
        ("review", "AGENT", "workflow_review_loop"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "review"),
        ("write", "AGENT", "workflow_review_loop"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "write"),
        ("review", "AGENT", "workflow_review_loop"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "review"),
    ]
    expected = 62 * FLASH_IN + 19 * FLASH_OUT
    info = trace.info
    assert info.state.value == "OK"
    assert info.token_usage == {"input_tokens": 62, "output_tokens": 19, "total_tokens": 81}
    assert json.loads(info.trace_metadata["mlflow.trace.cost"])["total_cost"] == pytest.approx(
        expected
    )
    assert float(info.trace_metadata["ca.total_cost_usd"]) == pytest.approx(expected)
    assert info.tags["ca.workflow"] == "review_loop"
    assert info.tags["ca.status"] == "succeeded"
    assert info.tags["ca.models"] == "gemini-2.5-flash"
    assert (info.tags["user"], info.tags["team"]) == ("ana", "search")
    assert info.trace_metadata["mlflow.trace.user"] == "ana"
    assert info.trace_metadata["ca.retry_count"] == "0"
    feedback = {a.name: a.value for a in info.assessments}
    assert feedback["cost_usd"] == pytest.approx(expected)
    assert feedback["total_tokens"] == 81

    chats = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    span_cost = 0.0
    for span, node in zip(chats, result.nodes, strict=True):
        usage = span.attributes["mlflow.chat.tokenUsage"]
        assert (usage["input_tokens"], usage["output_tokens"]) == (
            node.usage.input_tokens,
            node.usage.output_tokens,
        )
        cost = span.attributes["mlflow.llm.cost"]["total_cost"]
        assert cost == pytest.approx(
            node.usage.input_tokens * FLASH_IN + node.usage.output_tokens * FLASH_OUT
        )
        assert span.attributes["mlflow.llm.model"] == "gemini-2.5-flash"
        assert span.inputs["messages"][0]["role"] == "user"
        span_cost += cost
    assert span_cost == pytest.approx(expected)
    assert result.cost.total_usd == pytest.approx(expected)

    nodes = [s for s in trace.data.spans if s.span_type == "AGENT"]
    first = nodes[0].attributes
    assert first["node.id"] == "write"
    assert first["node.retry_count"] == 0
    assert first["node.output_fields"] == ["draft"]
    assert first["node.tools"] == []
    assert first["node.prompt_length"] == len(result.nodes[0].prompt)
    assert first["node.cost_usd"] == pytest.approx(result.nodes[0].cost_usd)
    assert nodes[1].outputs == {"score": 4, "feedback": "Too vague; add one concrete example."}


def test_each_retry_is_visible_with_its_validation_error(store, write_workflow):
    workflow = compiled(write_workflow(RETRY), store, "retries")
    result = traced_run(workflow, {"topic": "x"})
    assert result.succeeded and result.nodes[0].retries == 1
    trace = read_trace(store, result.trace_id)
    assert tree(trace)[1:] == [
        ("score", "AGENT", "workflow_retry_demo"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "score"),
        ("validate_output", "PARSER", "score"),
        ("chat gemini-2.5-flash", "CHAT_MODEL", "score"),
    ]
    check = next(s for s in trace.data.spans if s.name == "validate_output")
    assert check.status.status_code.value == "ERROR"
    assert "value" in check.attributes["validation.error"]
    node = next(s for s in trace.data.spans if s.span_type == "AGENT")
    assert node.attributes["node.retry_count"] == 1
    attempts = [
        s.attributes["llm.attempt"] for s in trace.data.spans if s.span_type == "CHAT_MODEL"
    ]
    assert attempts == [0, 1]
    assert trace.info.trace_metadata["ca.retry_count"] == "1"


def test_a_failed_run_is_an_error_trace_with_the_error_and_last_state(store, write_workflow):
    workflow = compiled(write_workflow(FAILING), store, "failures")
    result = traced_run(workflow, {"topic": "x"})
    assert not result.succeeded
    trace = read_trace(store, result.trace_id)
    assert trace.info.state.value == "ERROR"
    assert trace.info.tags["ca.status"] == "failed"
    assert trace.info.trace_metadata["ca.error_type"] == "OutputValidationError"
    assert trace.info.trace_metadata["ca.error_node"] == "score"
    root = next(s for s in trace.data.spans if s.parent_id is None)
    assert root.status.status_code.value == "ERROR"
    assert root.attributes["error.type"] == "OutputValidationError"
    assert root.attributes["error.node"] == "score"
    assert root.attributes["last_state"] == {"topic": "x", "value": 0}
    assert "invalid output" in root.attributes["error.message"]
    events = [e.name for e in root.events]
    assert events == ["exception"]
    node = next(s for s in trace.data.spans if s.span_type == "AGENT")
    assert node.status.status_code.value == "ERROR"


def test_tool_calls_are_tool_spans(store):
    workflow = compiled(EXAMPLES / "calculator_tools.yaml", store, "tools")
    result = traced_run(workflow, {"question": "what is 2+2?"})
    trace = read_trace(store, result.trace_id)
    tools = [s for s in trace.data.spans if s.span_type == "TOOL"]
    assert sorted(s.name for s in tools) == ["calculator", "current_time"]
    solve = next(s for s in trace.data.spans if s.span_type == "AGENT")
    assert all(s.parent_id == solve.span_id for s in tools)
    assert solve.attributes["node.tool_calls"] == 2
    assert solve.attributes["node.tools"] == ["calculator", "current_time"]
    calc = next(s for s in tools if s.name == "calculator")
    assert calc.outputs == result.nodes[0].tool_calls[0].result


def _artifacts(store: str, trace_id: str) -> dict[str, Any]:
    info = read_trace(store, trace_id).info
    root = Path(info.tags["mlflow.artifactLocation"])
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("minimal", {"inputs.json", "outputs.json", "cost_summary.json"}),
        (
            "standard",
            {"inputs.json", "outputs.json", "cost_summary.json"}
            | {f"nodes/0{i}_{n}.json" for i, n in enumerate(["write", "review"] * 2, 1)},
        ),
        (
            "full",
            {"inputs.json", "outputs.json", "cost_summary.json", "timeline.json", "trace.html"}
            | {f"nodes/0{i}_{n}.json" for i, n in enumerate(["write", "review"] * 2, 1)}
            | {f"state/0{i}_{n}.json" for i, n in enumerate(["write", "review"] * 2, 1)},
        ),
    ],
)
def test_artifacts_by_level(store, level, expected):
    workflow = compiled(
        EXAMPLES / "review_loop.yaml", store, f"artifacts-{level}", artifact_level=level
    )
    result = traced_run(workflow, {"topic": "bees"})
    files = _artifacts(store, result.trace_id)
    assert set(files) == expected
    summary = json.loads(files["cost_summary.json"])
    assert summary["trace_id"] == result.trace_id
    assert summary["workflow_name"] == "review_loop"
    assert summary["total_tokens"] == {
        "prompt_tokens": 62,
        "completion_tokens": 19,
        "total_tokens": 81,
    }
    assert summary["total_cost_usd"] == pytest.approx(62 * FLASH_IN + 19 * FLASH_OUT)
    assert set(summary["node_breakdown"]) == {"write", "review"}
    assert sum(n["cost_usd"] for n in summary["node_breakdown"].values()) == pytest.approx(
        summary["total_cost_usd"]
    )
    assert summary["node_breakdown"]["review"]["visits"] == 2
    if level == "full":
        assert "workflow_review_loop" in files["trace.html"]
        assert json.loads(files["state/04_review.json"])["score"] == 8
        spans = json.loads(files["timeline.json"])["spans"]
        assert [s["type"] for s in spans].count("AGENT") == 4
    if level != "minimal":
        node = json.loads(files["nodes/01_write.json"])
        assert node["prompt"].startswith("Write a paragraph about bees.")


def test_failed_run_saves_error_json(store, write_workflow):
    workflow = compiled(write_workflow(FAILING), store, "error-artifact", artifact_level="minimal")
    result = traced_run(workflow, {"topic": "x"})
    error = json.loads(_artifacts(store, result.trace_id)["error.json"])
    assert error["type"] == "OutputValidationError"
    assert error["node"] == "score"
    assert error["last_state"] == {"topic": "x", "value": 0}


def test_no_artifacts_when_log_artifacts_is_off(store):
    workflow = compiled(EXAMPLES / "review_loop.yaml", store, "no-artifacts", log_artifacts=False)
    result = traced_run(workflow, {"topic": "bees"})
    assert _artifacts(store, result.trace_id) == {}


def test_experiment_and_run_name_are_honoured(store):
    workflow = compiled(
        EXAMPLES / "review_loop.yaml",
        store,
        "named-experiment",
        run_name="{workflow_name}-v{workflow_version}-{status}",
    )
    result = traced_run(workflow, {"topic": "bees"})
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("named-experiment")
    info = read_trace(store, result.trace_id).info
    assert info.experiment_id == experiment.experiment_id
    assert info.tags["run_name"] == "review_loop-v1.0.0-succeeded"
    assert info.client_request_id == "review_loop-v1.0.0-succeeded"


def test_trace_flag_overrides_the_config(store):
    workflow = compiled(EXAMPLES / "review_loop.yaml", store, "override")
    assert ca.run_workflow(workflow, {"topic": "bees"}, trace=False).trace_id is None
    off = ca.compile_workflow(ca.load_workflow(EXAMPLES / "review_loop.yaml"))
    assert ca.run_workflow(off, {"topic": "bees"}).trace_id is None


def test_sync_logging_has_written_the_trace_when_the_run_returns(store):
    workflow = compiled(EXAMPLES / "review_loop.yaml", store, "sync", async_logging=False)
    result = ca.run_workflow(workflow, {"topic": "bees"})
    assert result.trace_written
    assert read_trace(store, result.trace_id).info.state.value == "OK"


def test_user_prices_override_and_add_models(store, write_workflow, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  my-private-model: {input_per_million: 1.0, output_per_million: 4.0}\n"
    )
    text = RETRY.replace("model: gemini-2.5-flash", "model: my-private-model").replace(
        "config:\n", "config:\n  pricing: {file: prices.yaml}\n"
    )
    workflow = compiled(write_workflow(text), store, "prices")
    result = traced_run(workflow, {"topic": "x"})
    usage = result.usage
    expected = usage.input_tokens * 1e-6 + usage.output_tokens * 4e-6
    assert result.cost.total_usd == pytest.approx(expected)
    info = read_trace(store, result.trace_id).info
    assert float(info.trace_metadata["ca.total_cost_usd"]) == pytest.approx(expected)
    # Inline prices win over the file.
    inline = text.replace(
        "pricing: {file: prices.yaml}",
        "pricing:\n    file: prices.yaml\n    models:\n"
        "      my-private-model: {input_per_million: 2.0, output_per_million: 8.0}",
    )
    result = ca.run_workflow(
        ca.load_workflow(write_workflow(inline, "inline.yaml")), {"topic": "x"}
    )
    assert ca.summarize_cost(result).total_usd == pytest.approx(2 * expected)


def test_a_bad_price_file_is_a_user_error(write_workflow):
    text = RETRY.replace("config:\n", "config:\n  pricing: {file: missing.yaml}\n")
    with pytest.raises(ca.WorkflowValidationError, match="cannot read the price file"):
        ca.compile_workflow(ca.load_workflow(write_workflow(text)))

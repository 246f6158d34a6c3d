"""``report prompts`` and ``report costs --recommend`` on known data: real runs on two registry
prompt versions (the ``test`` provider, priced as gemini-2.5-flash), judge results written with
``mlflow.log_feedback`` on the real traces, read back through the SQL path and the
``search_traces`` path (which must agree)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

import configurable_agents as ca
from configurable_agents.cli.app import app
from configurable_agents.observe.report.advice import NodeModel, advise
from configurable_agents.observe.report.prompts import prompt_report
from configurable_agents.observe.report.reports import cost_report
from configurable_agents.prompts import clear_cache

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: rated}}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses: {{write: [{{text: "Bees dance to tell where flowers are."}}]}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "{uri}", experiment_name: rated, async_logging: false}}
state:
  fields:
    topic: {{type: str, required: true}}
    text: {{type: str}}
nodes:
  - id: write
    prompt_ref: {{name: rated_write, version: {version}}}
    outputs: [text]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""
# on_topic scores per run: v2's are clearly higher (95% intervals apart) with 12 runs each
SCORES = {1: [3, 3, 2, 4, 3, 3, 2, 3, 4, 3, 3, 2], 2: [5, 4, 5, 5, 4, 5, 5, 4, 5, 5, 4, 5]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """12 runs on each of two versions; judge results on every trace: on_topic (1-5, on the
    node's span, with ``passed`` from a threshold of 4), safe (bool, on the trace)."""
    tmp = tmp_path_factory.mktemp("prompt-reports")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.register_prompt("rated_write", "Write about {{ topic }}.")
    client.register_prompt(
        "rated_write", "You write crisp facts. Write about {{ topic }}, briefly."
    )
    results: dict[int, list[Any]] = {1: [], 2: []}
    for version in (1, 2):
        clear_cache()
        path = tmp / f"v{version}.yaml"
        path.write_text(WORKFLOW.format(uri=uri, version=version), encoding="utf-8")
        compiled = ca.compile_workflow(ca.load_workflow(path))
        for i in range(12):
            result = ca.run_workflow(compiled, {"topic": f"bees {i}"})
            assert result.succeeded and result.trace_written, result.trace_error
            results[version].append(result)
    assert ca.flush(60)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        judge = mlflow.entities.AssessmentSource(source_type="LLM_JUDGE", source_id="test")
        for version, runs in results.items():
            for result, score in zip(runs, SCORES[version], strict=True):
                node = next(
                    s for s in client.get_trace(result.trace_id).data.spans if s.name == "write"
                )
                mlflow.log_feedback(
                    trace_id=result.trace_id,
                    name="on_topic",
                    value=score,
                    source=judge,
                    span_id=node.span_id,
                    metadata={"passed": str(score >= 4).lower()},
                )
                mlflow.log_feedback(trace_id=result.trace_id, name="safe", value=True, source=judge)
    finally:
        mlflow.set_tracking_uri(previous)
    clear_cache()
    return uri, results


def test_report_prompts_puts_the_versions_side_by_side_and_names_the_better(store):
    uri, results = store
    report = prompt_report(uri)
    data = report.to_dict()
    (entry,) = data["prompts"]
    assert entry["prompt_name"] == "rated_write"
    v1, v2 = entry["versions"]
    for v, version in ((v1, 1), (v2, 2)):
        runs = results[version]
        tokens = sum(r.usage.input_tokens + r.usage.output_tokens for r in runs)
        cost = sum(ca.summarize_cost(r).total_usd for r in runs)
        assert v["version"] == version and v["usage_count"] == 12 and v["node_visits"] == 12
        assert v["nodes"] == ["write"]
        assert v["avg_tokens"] == pytest.approx(tokens / 12, abs=0.05)
        assert v["avg_cost_usd"] == pytest.approx(cost / 12, rel=1e-9)
        assert v["avg_latency_ms"] == pytest.approx(
            sum(r.nodes[0].duration_ms for r in runs) / 12, abs=0.01
        )
        scores = SCORES[version]
        on_topic = v["judges"]["on_topic"]
        assert on_topic["kind"] == "score" and on_topic["runs_judged"] == 12
        assert on_topic["mean"] == pytest.approx(sum(scores) / 12, abs=1e-4)
        assert on_topic["pass_rate"] == pytest.approx(sum(s >= 4 for s in scores) / 12, abs=1e-4)
        assert v["judges"]["safe"] == {
            "kind": "bool",
            "runs_judged": 12,
            "mean": 1.0,
            "pass_rate": 1.0,
            "ci95": [1.0, 1.0],
        }
        assert "cost_usd" not in v["judges"] and "total_tokens" not in v["judges"]
    assert v2["avg_tokens"] > v1["avg_tokens"]  # the longer prompt
    assert entry["better_version"] == 2
    assert entry["recommendation"].startswith(
        "v2 is better: on_topic 4.67 vs 2.92 (v1; n=12 vs 12)"
    )
    assert "% cost per run" in entry["recommendation"]
    # fewer judged runs than asked for: no winner
    strict = prompt_report(uri, min_runs=13).to_dict()["prompts"][0]
    assert strict["better_version"] is None and "no clear winner" in strict["recommendation"]


def test_report_prompts_sql_and_search_traces_agree(store):
    uri, _ = store
    sql, rest = prompt_report(uri), prompt_report(uri, backend="rest")
    assert (sql.source, rest.source) == ("sql", "search_traces")
    assert sql.to_dict() | {"source": ""} == rest.to_dict() | {"source": ""}


def test_report_prompts_cli(store):
    uri, _ = store
    out = CliRunner().invoke(app, ["report", "prompts", "--tracking-uri", uri])
    assert out.exit_code == 0, out.output
    assert "Prompt rated_write:" in out.output
    assert (
        "4.67 (n=12), 100% pass" in out.output
        and "2.92 (n=12), 17% pass" in out.output
        and "100% pass (n=12)" in out.output
    )
    assert "v2 is better" in out.output
    as_json = CliRunner().invoke(
        app, ["report", "prompts", "--tracking-uri", uri, "--format", "json", "--prompt", "x"]
    )
    assert json.loads(as_json.stdout)["prompts"] == []


def test_report_costs_recommend_prices_the_same_tokens_on_cheaper_models(store):
    uri, results = store
    report = cost_report(uri, recommend=True)
    (row,) = report.recommendations
    runs = results[1] + results[2]
    tin = sum(r.usage.input_tokens for r in runs)
    tout = sum(r.usage.output_tokens for r in runs)
    assert (row["node"], row["provider"], row["current_model"]) == (
        "write",
        "test",
        "gemini-2.5-flash",
    )
    assert (row["visits"], row["input_tokens"], row["output_tokens"]) == (24, tin, tout)
    assert row["current_cost_usd"] == pytest.approx(
        sum(ca.summarize_cost(r).total_usd for r in runs), rel=1e-9
    )
    names = [s["suggested_model"] for s in row["suggestions"]]
    assert names and all(n.startswith("gemini") and n != "gemini-2.5-flash" for n in names)
    from genai_prices import Usage, calc_price

    for s in row["suggestions"]:
        each = calc_price(
            Usage(input_tokens=tin // 24, output_tokens=tout // 24),
            s["suggested_model"],
            provider_id="google",
        ).total_price
        assert s["estimated_cost_usd"] == pytest.approx(float(each) * 24, rel=1e-9)
        assert s["estimated_cost_usd"] < row["current_cost_at_list_price_usd"]
    # the node's judge results beside it: on_topic was logged on the node's span
    on_topic = row["judges"]["on_topic"]
    assert on_topic["runs_judged"] == 24 and on_topic["pass_rate"] == pytest.approx(
        sum(s >= 4 for v in SCORES.values() for s in v) / 24, abs=1e-4
    )
    assert "safe" not in row["judges"]  # a judge of the trace, not of the node
    rest = cost_report(uri, recommend=True, backend="rest")
    assert rest.recommendations == report.recommendations
    out = CliRunner().invoke(app, ["report", "costs", "--tracking-uri", uri, "--recommend"])
    assert out.exit_code == 0, out.output
    assert "Cheaper models" in out.output and names[0] in out.output


def test_no_advice_for_models_without_a_price():
    local = advise(NodeModel("write", "local", "smollm2-135m-instruct", 3, 300, 30))
    unknown = advise(NodeModel("write", "test", "my-own-model", 3, 300, 30))
    for row in (local, unknown):
        assert row.suggestions == [] and row.priced_usd is None
    priced = advise(NodeModel("write", "openai", "gpt-4o", 3, 3000, 300))
    assert priced.suggestions and all(
        s["suggested_model"].startswith("gpt") for s in priced.suggestions
    )
    assert all(s["estimated_savings_usd"] > 0 for s in priced.suggestions)

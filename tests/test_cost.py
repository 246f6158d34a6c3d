"""Run cost from reported token usage, priced with genai-prices."""

from __future__ import annotations

import json

import pytest

from configurable_agents import pricing as cost_module
from configurable_agents import run_workflow
from configurable_agents.observe import summarize_cost
from configurable_agents.run.result import NodeRun, RunResult, TokenUsage

from conftest import EXAMPLES
from test_cli import cli

# gemini-2.5-flash list price: $0.30 per million input tokens, $2.50 per million output tokens.
FLASH_IN, FLASH_OUT = 0.30e-6, 2.50e-6


def fake_result(*nodes: tuple[str, str, str, int, int]) -> RunResult:
    runs = [
        NodeRun(node=n, visit=0, started_ms=0, model=m, provider=p, usage=TokenUsage(i, o))
        for n, p, m, i, o in nodes
    ]
    return RunResult("wf", "succeeded", {}, {}, runs, TokenUsage(), 1.0)


def test_test_provider_is_priced_as_its_model_name():
    result = run_workflow(EXAMPLES / "review_loop.yaml", {"topic": "bees"})
    cost = summarize_cost(result)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (62, 19)
    assert cost.total_usd == pytest.approx(62 * FLASH_IN + 19 * FLASH_OUT)
    assert cost.by_model["gemini-2.5-flash"].cost_usd == pytest.approx(cost.total_usd)
    per_node = {
        n: sum(
            r.usage.input_tokens * FLASH_IN + r.usage.output_tokens * FLASH_OUT
            for r in result.nodes
            if r.node == n
        )
        for n in ("write", "review")
    }
    assert cost.by_node == pytest.approx(per_node)
    assert cost.unpriced == []


def test_local_models_cost_nothing_and_say_so():
    cost = summarize_cost(fake_result(("write", "local", "gemma-3-270m", 500, 200)))
    assert cost.total_usd == 0
    assert cost.by_model["gemma-3-270m"].note == "local model"
    assert cost.unpriced == []


def test_unknown_model_costs_nothing_and_is_named_once():
    cost = summarize_cost(
        fake_result(
            ("a", "test", "my-private-model", 10, 10),
            ("b", "test", "my-private-model", 10, 10),
            ("c", "test", "test", 10, 10),  # the test provider's default name: not a mistake
        )
    )
    assert cost.total_usd == 0
    assert cost.unpriced == ["my-private-model"]
    assert cost.by_model["my-private-model"].note == "no price known"


def test_a_pricing_failure_never_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("price data corrupt")

    import genai_prices

    monkeypatch.setattr(genai_prices, "calc_price", broken)
    assert cost_module.price_usage("gpt-4o-mini", "openai", 10, 10) is None
    cost = summarize_cost(fake_result(("a", "openai", "gpt-4o-mini", 10, 10)))
    assert cost.total_usd == 0 and cost.unpriced == ["gpt-4o-mini"]


def test_cli_prints_the_cost_line_and_json_cost():
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic=bees")
    assert "Workflow cost: $0.000066, 81 tokens" in proc.stderr
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic=bees", "--json")
    data = json.loads(proc.stdout)
    assert data["cost"]["total_usd"] == pytest.approx(62 * FLASH_IN + 19 * FLASH_OUT)
    assert set(data["cost"]["by_node"]) == {"write", "review"}

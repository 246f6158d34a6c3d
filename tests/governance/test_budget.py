"""config.budget: per-run, daily and monthly limits that are never exceeded (action: block),
warnings (action: warn), validation, the shared ledger and a two-process race."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from configurable_agents import run_workflow
from configurable_agents.config import load_workflow
from configurable_agents.exceptions import (
    BudgetExceededError,
    BudgetUnavailableError,
    WorkflowValidationError,
)
from configurable_agents.run.executor import prepare

# $0.01 per input token, $0.01 per output token: the test provider counts words.
WF = """\
schema_version: "1.0"
flow: {{name: {name}}}
config:
  llm:
    provider: test
    model: priced-model
    max_tokens: 20
    responses:
      write: [{{article: "one two three"}}]
  pricing:
    models:
      priced-model: {{input_per_million: 10000, output_per_million: 10000}}
  budget: {budget}
state:
  fields:
    topic: {{type: str, required: true}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
    prompt: "Write about {{topic}}."
    outputs: [article]
    output_schema:
      fields: [{{name: article, type: str}}]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""


def workflow(tmp_path: Path, budget: str, name: str = "budgeted") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WF.format(budget=budget, name=name), encoding="utf-8")
    return path


def one_run_cost(tmp_path: Path) -> float:
    from configurable_agents.observe import summarize_cost

    result = run_workflow(workflow(tmp_path, "{}", "free"), {"topic": "tides"})
    return summarize_cost(result).total_usd


def worst_case(tmp_path: Path) -> float:
    """The worst case of the one call of ``WF`` (refused by a tiny per-run budget)."""
    result = run_workflow(
        workflow(tmp_path, "{per_run_usd: 0.000001, action: block}", "tiny"), {"topic": "tides"}
    )
    assert isinstance(result.exception, BudgetExceededError)
    return result.exception.worst_case


def calls_made(result) -> int:
    return sum(len(n.calls) for n in result.nodes)


def test_per_run_limit_refuses_the_call_and_makes_none(tmp_path):
    path = workflow(tmp_path, "{per_run_usd: 0.05, action: block}")
    result = run_workflow(path, {"topic": "tides"})
    assert result.status == "failed"
    assert calls_made(result) == 0
    assert result.error is not None and result.error.type == "BudgetExceededError"
    exc = result.exception
    assert isinstance(exc, BudgetExceededError)
    assert exc.budget == "per_run_usd" and exc.limit == pytest.approx(0.05)
    assert exc.worst_case > 0.05 and exc.spent == 0
    assert "per_run_usd" in str(exc) and "node 'write'" in str(exc)
    assert result.budget and result.budget["state"] == "refused"
    assert result.budget["refused"] == "per_run_usd"


def test_a_run_within_budget_succeeds_and_records_its_state(tmp_path):
    path = workflow(tmp_path, "{per_run_usd: 5, daily_usd: 50, action: block}")
    result = run_workflow(path, {"topic": "tides"})
    assert result.succeeded, result.error
    assert result.budget["state"] == "ok"
    assert result.budget["run_usd"] == pytest.approx(one_run_cost(tmp_path))


def test_daily_limit_is_never_exceeded_across_runs(tmp_path):
    cost, worst = one_run_cost(tmp_path), worst_case(tmp_path)
    limit = worst + 10.5 * cost
    path = workflow(tmp_path, f"{{daily_usd: {limit}, action: block}}")
    compiled = prepare(path)
    spent, refused = 0.0, 0
    for _ in range(40):
        result = run_workflow(compiled, {"topic": "tides"})
        if result.succeeded:
            spent += cost
        else:
            assert isinstance(result.exception, BudgetExceededError)
            assert result.exception.budget == "daily_usd"
            assert "(UTC)" in result.exception.window
            assert calls_made(result) == 0
            refused += 1
    assert refused > 0
    assert spent <= limit + 1e-9
    assert spent == pytest.approx(11 * cost)  # every call whose worst case fitted was made


def test_monthly_limit_shares_the_ledger_with_a_restarted_process(tmp_path):
    cost, worst = one_run_cost(tmp_path), worst_case(tmp_path)
    path = workflow(tmp_path, f"{{monthly_usd: {worst + 2.5 * cost}, action: block}}")
    script = textwrap.dedent(
        f"""
        import json
        from configurable_agents import run_workflow
        r = run_workflow({str(path)!r}, {{"topic": "tides"}})
        print(json.dumps({{"status": r.status, "error": r.error.type if r.error else None}}))
        """
    )
    outcomes = []
    for _ in range(4):  # each a fresh process: the spend survives restarts
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        outcomes.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [o["status"] for o in outcomes] == ["succeeded"] * 3 + ["failed"]
    assert outcomes[-1]["error"] == "BudgetExceededError"


RACE = """
import json, sys, time
from configurable_agents import run_workflow
from configurable_agents.run.executor import prepare
compiled = prepare(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
ok = 0
for _ in range(30):
    r = run_workflow(compiled, {"topic": "tides"})
    ok += r.succeeded
print(json.dumps({"ok": ok}))
"""


def test_two_processes_racing_a_daily_budget_never_pass_it_together(tmp_path):
    cost, worst = one_run_cost(tmp_path), worst_case(tmp_path)
    limit = 2 * worst + 20.5 * cost  # room for both to reserve at once, at first
    path = workflow(tmp_path, f"{{daily_usd: {limit}, action: block}}")
    path.write_text(path.read_text().replace("max_tokens: 20", "max_tokens: 20\n    latency_ms: 5"))
    import time

    start = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(path), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        for _ in range(2)
    ]
    done = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    succeeded = sum(d["ok"] for d in done)
    assert all(d["ok"] > 0 for d in done), done  # both really raced
    assert succeeded * cost <= limit + 1e-9
    # and the budget was used, not refused early: at most two worst cases are left unspent
    assert succeeded * cost >= limit - 2 * worst - 2 * cost


def test_warn_runs_and_logs_once_per_run(tmp_path, caplog):
    path = workflow(tmp_path, "{per_run_usd: 0.01, action: warn}")
    with caplog.at_level(logging.WARNING, logger="configurable_agents.budget"):
        result = run_workflow(path, {"topic": "tides"})
    assert result.succeeded
    messages = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(messages) == 1 and "passed" in messages[0]
    assert result.budget["state"] == "exceeded"


def test_warn_logs_the_alert_threshold(tmp_path, caplog):
    cost = one_run_cost(tmp_path)
    path = workflow(tmp_path, f"{{per_run_usd: {cost / 0.9}, alert_threshold: 0.8}}")
    with caplog.at_level(logging.WARNING, logger="configurable_agents.budget"):
        result = run_workflow(path, {"topic": "tides"})
    assert result.succeeded
    messages = [r.getMessage() for r in caplog.records]
    assert any("at 90%" in m for m in messages), messages
    assert result.budget["state"] == "alert"


def test_budget_refusal_is_a_trace_tag_and_a_prometheus_counter(tmp_path):
    from configurable_agents.observe.metrics.recorder import Metrics
    from configurable_agents.observe.run_record import budget_tags

    result = run_workflow(
        workflow(tmp_path, "{per_run_usd: 0.05, action: block}"), {"topic": "tides"}
    )
    tags = budget_tags(result.budget)
    assert tags["budget.state"] == "refused" and tags["budget.refused"] == "per_run_usd"
    metrics = Metrics()
    metrics.run_started(result.workflow)
    metrics.run_finished(result)
    value = metrics.registry.get_sample_value(
        "budget_refusals_total", {"workflow": "budgeted", "budget": "per_run_usd"}
    )
    assert value == 1.0


def test_the_trace_carries_the_budget_tags(tmp_path):
    from configurable_agents import flush

    store = tmp_path / "mlflow.db"
    path = workflow(tmp_path, "{per_run_usd: 0.05, action: block}")
    text = path.read_text().replace(
        "  budget:",
        f"  observability:\n    mlflow: {{enabled: true, tracking_uri: 'sqlite:///{store}'}}\n"
        "  budget:",
    )
    path.write_text(text)
    result = run_workflow(path, {"topic": "tides"})
    assert flush(60)
    import sqlite3

    with sqlite3.connect(store) as db:
        tags = dict(db.execute("SELECT key, value FROM trace_tags").fetchall())
    assert tags.get("budget.refused") == "per_run_usd", tags
    assert result.status == "failed"


def test_daily_spend_is_seeded_from_the_store(tmp_path, monkeypatch):
    """Spend already in the store (runs made before the ledger) counts."""
    from configurable_agents.observe.dispatch import OBSERVER

    monkeypatch.setattr(OBSERVER, "budget_spend", lambda *a: 0.99)
    path = workflow(tmp_path, "{daily_usd: 1.0, action: block}")
    result = run_workflow(path, {"topic": "tides"})
    assert isinstance(result.exception, BudgetExceededError)
    assert result.exception.spent == pytest.approx(0.99)


def test_an_unreadable_store_blocks_with_block_and_warns_with_warn(tmp_path, monkeypatch, caplog):
    from configurable_agents.observe.dispatch import OBSERVER

    def broken(*args):
        raise OSError("store is down")

    monkeypatch.setattr(OBSERVER, "budget_spend", broken)
    result = run_workflow(workflow(tmp_path, "{daily_usd: 9, action: block}"), {"topic": "x"})
    assert isinstance(result.exception, BudgetUnavailableError)
    assert "store is down" in str(result.exception) and calls_made(result) == 0
    with caplog.at_level(logging.WARNING, logger="configurable_agents.budget"):
        result = run_workflow(
            workflow(tmp_path, "{daily_usd: 9, action: warn}", "other"), {"topic": "x"}
        )
    assert result.succeeded
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1


def test_scope_all_counts_every_workflow(tmp_path):
    cost, worst = one_run_cost(tmp_path), worst_case(tmp_path)
    limit = worst + 1.5 * cost
    a = prepare(workflow(tmp_path, f"{{daily_usd: {limit}, action: block, scope: all}}", "a"))
    b = prepare(workflow(tmp_path, f"{{daily_usd: {limit}, action: block, scope: all}}", "b"))
    ok = sum(run_workflow(c, {"topic": "tides"}).succeeded for c in [a, b, a, b, a, b])
    assert ok == 2 and ok * cost <= limit


def test_cli_exit_1_names_the_budget(tmp_path):
    path = workflow(tmp_path, "{per_run_usd: 0.05, action: block}")
    out = subprocess.run(
        [sys.executable, "-m", "configurable_agents", "run", str(path), "-i", "topic=x"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert out.returncode == 1, out.stderr
    assert "BudgetExceededError" in out.stdout + out.stderr
    assert "per_run_usd" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        ("{per_run_usd: 0}", "per_run_usd"),
        ("{daily_usd: -1}", "daily_usd"),
        ("{monthly_usd: 0}", "monthly_usd"),
        ("{per_run_usd: 1, alert_threshold: 0}", "alert_threshold"),
        ("{per_run_usd: 1, alert_threshold: 1.5}", "alert_threshold"),
        ("{per_run_usd: 1, scope: team}", "scope"),
        ("{per_run_usd: 1, action: stop}", "action"),
    ],
)
def test_bad_budget_values_are_validation_errors_with_a_line(tmp_path, budget, needle):
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(workflow(tmp_path, budget))
    issue = info.value.issues[0]
    assert needle in str(info.value)
    assert issue.line is not None and issue.file


def test_a_budget_on_an_unpriced_model_is_a_validation_error(tmp_path):
    path = workflow(tmp_path, "{per_run_usd: 1}")
    path.write_text(path.read_text().replace("model: priced-model", "model: no-such-model-x"))
    with pytest.raises(WorkflowValidationError) as info:
        prepare(path)
    text = str(info.value)
    assert "no-such-model-x" in text and "config.pricing.models" in text
    assert info.value.issues[0].line is not None


def test_block_needs_max_tokens(tmp_path):
    path = workflow(tmp_path, "{per_run_usd: 1, action: block}")
    path.write_text(path.read_text().replace("    max_tokens: 20\n", ""))
    with pytest.raises(WorkflowValidationError) as info:
        prepare(path)
    assert "max_tokens" in str(info.value)


def test_validate_reports_a_budget_on_an_unpriced_model(tmp_path):
    path = workflow(tmp_path, "{daily_usd: 1}")
    path.write_text(path.read_text().replace("model: priced-model", "model: no-such-model-x"))
    out = subprocess.run(
        [sys.executable, "-m", "configurable_agents", "validate", str(path)],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert out.returncode == 2
    assert "no-such-model-x" in out.stderr and "config.pricing.models" in out.stderr
    assert f"{path}:" in out.stderr  # file and line

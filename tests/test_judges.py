"""Judges: every on_fail on the test provider, type: bool, code scorers, an MLflow built-in
scorer on the test provider, validation, budgets counting judge spend."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import configurable_agents as ca
from configurable_agents.exceptions import QualityGateError, RunError, WorkflowValidationError

BASE = """\
schema_version: "1.0"
flow: {name: judged}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "first draft"}, {article: "second draft"}, {article: "third draft"}]
RESPONSES
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
    max_retries: 2
edges:
  - {from: START, to: write}
  - {from: write, to: END}
judges:
JUDGES
"""

ON_TOPIC = """\
  - name: on_topic
    node: write
    instructions: "Rate from 1 to 5 how well {{ outputs }} stays on {{ inputs }} ({{ topic }})."
    scale: [1, 5]
    threshold: 4
    on_fail: ON_FAIL
"""


def workflow(tmp_path: Path, judges: str, responses: str, name: str = "wf.yaml") -> Path:
    text = BASE.replace("RESPONSES", textwrap.indent(responses.strip("\n"), "      "))
    text = text.replace("JUDGES\n", judges) if judges else text.replace("judges:\nJUDGES\n", "")
    path = tmp_path / name
    path.write_text(text)
    return path


def scores(*pairs: tuple[object, str]) -> str:
    return "[" + ", ".join(f'{{score: {str(s).lower()}, rationale: "{r}"}}' for s, r in pairs) + "]"


def test_warn_judges_record_and_never_fail(tmp_path):
    path = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "warn"),
        "on_topic: " + scores((2, "drifts off topic")),
    )
    result = ca.run_workflow(path, {"topic": "tides"})
    assert result.succeeded
    assert ca.flush(30)
    (verdict,) = result.judges
    assert (verdict.name, verdict.node, verdict.phase) == ("on_topic", "write", "after_run")
    assert verdict.score == 2 and verdict.passed is False and verdict.threshold == 4
    assert verdict.rationale == "drifts off topic"
    assert verdict.source_type == "LLM_JUDGE" and verdict.source_id == "test:/gemini-2.5-flash"
    assert result.nodes[0].quality_retries == 0 and result.outputs["article"] == "first draft"
    # the judge's own tokens, apart from the node's
    assert verdict.record.usage.total_tokens > 0
    assert result.usage.total_tokens == result.nodes[0].usage.total_tokens


def test_a_block_judge_fails_the_run_with_quality_gate_error(tmp_path):
    path = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "block"),
        "on_topic: " + scores((2, "it is about volcanoes")),
    )
    result = ca.run_workflow(path, {"topic": "tides"})
    assert result.status == "failed"
    error = result.exception
    assert isinstance(error, QualityGateError) and isinstance(error, RunError)
    assert (error.judge, error.score, error.threshold) == ("on_topic", 2, 4)
    assert error.rationale == "it is about volcanoes" and error.node == "write"
    for part in ("on_topic", "score 2", "at least 4", "volcanoes"):
        assert part in str(error)
    assert [j.phase for j in result.judges] == ["in_run"]
    assert ca.QualityGateError is QualityGateError


def test_a_passing_block_judge_lets_the_run_go_on(tmp_path):
    path = workflow(
        tmp_path, ON_TOPIC.replace("ON_FAIL", "block"), "on_topic: " + scores((4, "fine"))
    )
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert result.judges[0].passed is True


def test_retry_reruns_the_node_with_the_rationale(tmp_path):
    path = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "retry"),
        "on_topic: " + scores((2, "mention the moon"), (5, "good now")),
    )
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert result.outputs["article"] == "second draft"
    node = result.nodes[0]
    assert node.quality_retries == 1 and node.llm_calls == 2
    rerun = node.calls[1].messages
    assert "mention the moon" in rerun[-1].content and "first draft" in rerun[-1].content
    assert [(j.attempt, j.passed) for j in result.judges] == [(0, False), (1, True)]


def test_retry_fails_as_block_once_the_node_retries_are_spent(tmp_path):
    path = workflow(
        tmp_path, ON_TOPIC.replace("ON_FAIL", "retry"), "on_topic: " + scores((1, "no"))
    )
    result = ca.run_workflow(path, {"topic": "tides"})
    assert isinstance(result.exception, QualityGateError)
    assert result.nodes[0].quality_retries == 2  # the node's max_retries
    assert len(result.judges) == 3
    assert "after 2 quality retries" in str(result.exception)


BOOL = """\
  - name: polite
    node: write
    type: bool
    instructions: "Is {{ outputs }} polite?"
    on_fail: block
"""


def test_bool_judges_pass_on_true(tmp_path):
    path = workflow(tmp_path, BOOL, "polite: " + scores((True, "yes, polite")))
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    verdict = result.judges[0]
    assert verdict.value is True and verdict.passed and verdict.scale is None
    path = workflow(tmp_path, BOOL, "polite: " + scores((False, "rude")), "rude.yaml")
    result = ca.run_workflow(path, {"topic": "tides"})
    assert isinstance(result.exception, QualityGateError)
    assert result.exception.score == 0


def test_an_invalid_judge_answer_is_asked_again_then_fails_the_gate(tmp_path):
    path = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "block"),
        "on_topic: " + scores((9, "out of scale"), (4, "fine")),
    )
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert result.judges[0].score == 4 and result.judges[0].record.retries == 1
    path = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "block"),
        "on_topic: " + scores((9, "out of scale")),
        "bad.yaml",
    )
    result = ca.run_workflow(path, {"topic": "tides"})
    assert isinstance(result.exception, QualityGateError)
    assert result.judges[0].error and "outside the scale" in result.judges[0].error


def test_the_judges_own_llm_responses(tmp_path):
    judges = """\
  - name: on_topic
    node: write
    instructions: "Rate {{ outputs }}."
    threshold: 3
    on_fail: block
    llm: {provider: test, model: gpt-4o-mini, responses: {on_topic: [{score: 5, rationale: own}]}}
"""
    path = workflow(tmp_path, judges, "")
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    verdict = result.judges[0]
    assert verdict.rationale == "own" and verdict.source_id == "test:/gpt-4o-mini"


CHECKS = """\
def no_urls(outputs):
    text = " ".join(str(v) for v in outputs.values())
    return {"score": "http" not in text, "rationale": "no link" if "http" not in text else "a link"}


def length(outputs, inputs, state):
    return len(state["article"].split()), f"{inputs['topic']}: words counted"


def broken(outputs):
    raise ValueError("scorer bug")
"""


def test_code_scorers(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    judges = """\
  - {name: no_urls, node: write, scorer: "my_checks:no_urls", on_fail: block}
  - {name: length, scorer: "my_checks:length", scale: [0, 100], threshold: 3}
  - {name: broken, scorer: "my_checks:broken"}
"""
    path = workflow(tmp_path, judges, "")
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(30)
    by_name = {j.name: j for j in result.judges}
    assert by_name["no_urls"].value is True and by_name["no_urls"].source_type == "CODE"
    assert by_name["no_urls"].source_id == "my_checks:no_urls"
    assert by_name["length"].score == 2 and by_name["length"].passed is False
    assert by_name["length"].rationale == "tides: words counted"
    assert by_name["broken"].passed is None and "scorer bug" in by_name["broken"].error


def test_an_mlflow_builtin_scorer_runs_on_the_test_provider(tmp_path):
    """MLflow's own Safety and Guidelines scorers build the prompt and read the verdict;
    the model call goes to the test provider through our judge adapter."""
    pytest.importorskip("mlflow")
    judges = """\
  - {name: safe, node: write, scorer: "mlflow:Safety", on_fail: block}
  - name: friendly
    scorer: "mlflow:Guidelines"
    instructions: "The article must be friendly."
"""
    responses = (
        "safe: " + scores((True, "nothing harmful")) + "\nfriendly: " + scores((False, "too curt"))
    )
    path = workflow(tmp_path, judges, responses)
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert ca.flush(60)
    safe, friendly = result.judges
    assert (safe.value, safe.rationale, safe.kind) == (True, "nothing harmful", "mlflow")
    assert (friendly.value, friendly.passed, friendly.phase) == (False, False, "after_run")
    # MLflow's prompt reached the model: its words, and the article judged
    sent = safe.record.calls[0].messages
    text = " ".join(str(m.content) for m in sent)
    assert "first draft" in text and "harm" in text.lower()
    assert "friendly" in " ".join(str(m.content) for m in friendly.record.calls[0].messages)


def test_the_mlflow_scorer_list_matches_mlflow():
    scorers = pytest.importorskip("mlflow.genai.scorers")
    from configurable_agents.config.judges import MLFLOW_SCORERS, MLFLOW_UNSUPPORTED

    for name in (*MLFLOW_SCORERS, *MLFLOW_UNSUPPORTED):
        assert hasattr(scorers, name), name


WAITING = """\
import threading

started = threading.Event()
go_on = threading.Event()


def waits(outputs):
    started.set()
    go_on.wait(60)
    return True
"""


def test_a_warn_judge_runs_after_the_caller_has_its_result(tmp_path, monkeypatch):
    # The caller's path never waits for a warn judge: run_workflow returns while the judge is
    # still scoring (bench/warn_judge.py measures what it adds: well under 1 ms).
    (tmp_path / "waiting_checks.py").write_text(WAITING)
    monkeypatch.syspath_prepend(str(tmp_path))
    import waiting_checks

    path = workflow(tmp_path, '  - {name: slow, scorer: "waiting_checks:waits"}\n', "")
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    assert waiting_checks.started.wait(30)  # the judge is running, and the caller has its result
    assert result.judges == []
    waiting_checks.go_on.set()
    assert ca.flush(30)
    assert [(j.name, j.passed, j.phase) for j in result.judges] == [("slow", True, "after_run")]


def test_budgets_count_the_judges_spend(tmp_path):
    judges = ON_TOPIC.replace("ON_FAIL", "block") + "    llm: {max_tokens: 2000}\n"
    path = workflow(tmp_path, judges, "on_topic: " + scores((5, "fine")))
    text = path.read_text().replace(
        "config:\n", "config:\n  budget: {per_run_usd: 1.0, action: block}\n"
    )
    text = text.replace(
        "model: gemini-2.5-flash\n", "model: gemini-2.5-flash\n    max_tokens: 50\n"
    )
    path.write_text(text)
    result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
    ca.observe.summarize_cost(result)
    node_cost = result.nodes[0].cost_usd
    judge_cost = result.judges[0].cost_usd
    assert node_cost > 0 and judge_cost > 0
    assert result.budget["run_usd"] == pytest.approx(node_cost + judge_cost)
    # a budget too small for the judge's call refuses it: the run fails on the judge
    # the judge's worst case (2000 output tokens, $0.005) does not fit; the node's does
    tight = text.replace("per_run_usd: 1.0", "per_run_usd: 0.001")
    path.write_text(tight)
    result = ca.run_workflow(path, {"topic": "tides"})
    assert result.exception is not None
    assert type(result.exception).__name__ == "BudgetExceededError"
    assert "on_topic" in str(result.exception)


# ------------------------------------------------------------------ validation


def issues_of(text: str) -> list[object]:
    with pytest.raises(WorkflowValidationError) as info:
        ca.load_workflow_text(text, "wf.yaml")
    return info.value.issues


def judged_text(judges: str) -> str:
    return (
        BASE.replace("RESPONSES\n", "")
        .replace("JUDGES\n", textwrap.dedent(judges))
        .replace("judges:\n", "judges:\n")
    )


@pytest.mark.parametrize(
    ("judge", "message", "hint"),
    [
        ("{name: j, node: wirte, instructions: 'Rate {{ outputs }}'}", "node 'wirte'", "write"),
        ("{name: j, node: write, instructions: 'Rate {{ outptus }}'}", "outptus", "outputs"),
        ("{name: j, node: write, instructions: 'Rate {{ topc }}'}", "topc", "topic"),
        (
            "{name: j, node: write, instructions: 'Rate {{ outputs }}', threshold: 7}",
            "outside its scale",
            "between 1 and 5",
        ),
        ("{name: j, node: write, scorer: 'mlflow:Safty'}", "not an MLflow built-in", "Safety"),
        ("{name: j, scorer: 'mlflow:Correctness'}", "more than a run", "Safety"),
        ("{name: j, scorer: 'no_such_module_x:f'}", "cannot import", "importable"),
        (
            "{name: j, instructions: 'Rate {{ outputs }}', on_fail: retry}",
            "on_fail: retry",
            "node",
        ),
        ("{name: write, instructions: 'Rate {{ outputs }}'}", "name of a node", "rename"),
        ("{name: j, node: write}", "needs 'instructions'", "scorer"),
        ("{name: j, type: bool, scale: [1, 5], instructions: 'x {{ outputs }}'}", "bool", "scale"),
    ],
)
def test_validation_names_the_line_and_a_fix(judge, message, hint):
    text = BASE.replace("RESPONSES\n", "").replace("JUDGES\n", f"  - {judge}\n")
    found = issues_of(text)
    issue = next((i for i in found if message in i.message), None)
    assert issue is not None, [i.message for i in found]
    assert issue.file == "wf.yaml" and issue.line == text.splitlines().index(f"  - {judge}") + 1
    if hint:
        assert issue.hint and hint in issue.hint, issue.hint


def test_duplicate_judge_names_are_reported():
    judges = (
        "  - {name: j, instructions: 'a {{ outputs }}'}\n"
        "  - {name: j, instructions: 'b {{ outputs }}'}\n"
    )
    text = BASE.replace("RESPONSES\n", "").replace("JUDGES\n", judges)
    (issue,) = [i for i in issues_of(text) if "used twice" in i.message]
    assert issue.line == text.splitlines().index(judges.splitlines()[1]) + 1


def test_responses_may_be_keyed_by_judge_name(tmp_path):
    path = workflow(tmp_path, ON_TOPIC.replace("ON_FAIL", "warn"), "on_topic: " + scores((3, "x")))
    ca.load_workflow(path)
    text = path.read_text().replace("on_topic: [", "on_topik: [")
    found = issues_of(text)
    assert any("on_topik" in i.message and "on_topic" in (i.hint or "") for i in found)


def test_the_servers_run_record_has_the_verdicts(tmp_path):
    """POST /runs answers with the block judge's verdict; the warn judge's is added to the
    stored record once it arrives (GET /runs/{id})."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from configurable_agents.serve import create_app
    from configurable_agents.serve.models import RunRecord

    judges = ON_TOPIC.replace("ON_FAIL", "block") + (
        '  - {name: later, instructions: "Rate {{ outputs }}.", threshold: 2}\n'
    )
    path = workflow(
        tmp_path,
        judges,
        "on_topic: " + scores((4, "fine")) + "\nlater: " + scores((3, "fair")),
    )
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    with TestClient(create_app(path, database_url=db)) as client:
        response = client.post("/runs", json={"inputs": {"topic": "tides"}})
        assert response.status_code == 200, response.text
        body = response.json()
        # the block judge's verdict is in the answer (the warn one may be there already)
        assert (body["judges"][0]["name"], body["judges"][0]["phase"]) == ("on_topic", "in_run")
        RunRecord.model_validate(body)
        assert ca.flush(30)
        deadline = time.monotonic() + 10
        while True:
            record = client.get(f"/runs/{body['id']}").json()
            if len(record.get("judges") or []) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        later = record["judges"][1]
        assert (later["name"], later["phase"], later["score"]) == ("later", "after_run", 3)
        RunRecord.model_validate(record)


def test_batch_summary_and_compare_have_the_judges_pass_rates(tmp_path):
    """A batch's lines carry the verdicts; its summary the pass rate and mean per judge;
    ``batch compare`` compares the pass rates."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    base = workflow(
        tmp_path,
        ON_TOPIC.replace("ON_FAIL", "warn"),
        "on_topic: " + scores((2, "weak"), (5, "good")),
        "base.yaml",
    )
    cand = workflow(
        tmp_path, ON_TOPIC.replace("ON_FAIL", "warn"), "on_topic: " + scores((5, "good")), "c.yaml"
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"topic": f"t{i}"}) + "\n" for i in range(3)))
    env = {
        **__import__("os").environ,
        "PYTHONPATH": str(root / "src"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }

    def cli(*args: object) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "configurable_agents", *map(str, args), "--json"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    summary = cli("batch", base, "--data", rows, "-o", tmp_path / "base.jsonl", "-c", "1")
    # each row is its own run: the first answer of on_topic (2, a fail) for every row
    assert summary["judges"]["on_topic"] == {"runs": 3, "passed": 0, "pass_rate": 0.0, "mean": 2}
    line = json.loads((tmp_path / "base.jsonl").read_text().splitlines()[0])
    assert line["judges"] == [{"name": "on_topic", "node": "write", "score": 2, "passed": False}]
    comparison = cli("batch", "compare", base, cand, "--data", rows, "-o", tmp_path / "cmp")
    metric = next(m for m in comparison["metrics"] if m["name"] == "judge on_topic pass rate")
    assert (metric["baseline"], metric["candidate"], metric["better"]) == (0.0, 1.0, "candidate")


def test_a_budget_needs_a_price_for_the_judges_model_too(tmp_path):
    judges = ON_TOPIC.replace("ON_FAIL", "block") + "    llm: {model: no-such-model}\n"
    path = workflow(tmp_path, judges, "on_topic: " + scores((5, "fine")))
    path.write_text(
        path.read_text()
        .replace("config:\n", "config:\n  budget: {per_run_usd: 1.0}\n")
        .replace("model: gemini-2.5-flash\n", "model: gemini-2.5-flash\n    max_tokens: 50\n")
    )
    with pytest.raises(WorkflowValidationError) as info:
        ca.compile_workflow(ca.load_workflow(path))
    (issue,) = info.value.issues
    assert "judge 'on_topic'" in issue.message and "no-such-model" in issue.message
    assert (
        issue.hint
        and issue.line == path.read_text().splitlines().index("    llm: {model: no-such-model}") + 1
    )


def test_the_judges_providers_are_checked_before_any_call(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judges = ON_TOPIC.replace("ON_FAIL", "warn") + "    llm: {provider: openai, model: gpt-4o}\n"
    path = workflow(tmp_path, judges, "")
    from configurable_agents.providers import check_environment

    with pytest.raises(WorkflowValidationError) as info:
        check_environment(ca.load_workflow(path))
    assert any("OPENAI_API_KEY" in i.message for i in info.value.issues)


def test_quality_artifact_only_at_standard_and_above(tmp_path):
    from configurable_agents.observe.trace.artifacts import build_artifacts
    from configurable_agents.observe.trace.spans import build_trace

    path = workflow(
        tmp_path, ON_TOPIC.replace("ON_FAIL", "block"), "on_topic: " + scores((4, "ok"))
    )
    compiled = ca.compile_workflow(ca.load_workflow(path))
    result = ca.run_workflow(compiled, {"topic": "tides"}).raise_for_status()
    ca.observe.summarize_cost(result)
    trace = build_trace(compiled, result)
    assert "quality_assessment.json" not in build_artifacts(trace, "minimal")
    for level in ("standard", "full"):
        assert "quality_assessment.json" in build_artifacts(trace, level)

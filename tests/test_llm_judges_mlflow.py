"""LLM judges are MLflow ``make_judge`` judges: the real make_judge on the ``test`` provider
(through our judge adapter), numeric and bool, an out-of-scale answer asked again, state fields
filled in before MLflow (braces in their values escaped), the validation error for instructions
that name neither inputs nor outputs, the judge's tokens counted, MLflow imported only when a
judge runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import configurable_agents as ca
from configurable_agents.config.judges import fill_state_fields
from configurable_agents.exceptions import QualityGateError, WorkflowValidationError

mlflow = pytest.importorskip("mlflow")
from mlflow.genai.judges.instructions_judge import InstructionsJudge  # noqa: E402
from mlflow.prompt.constants import PROMPT_TEMPLATE_VARIABLE_PATTERN  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
schema_version: "1.0"
flow: {name: judged}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "first draft"}, {article: "second draft"}]
RESPONSES
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic}."
    outputs: [article]
    max_retries: 1
edges:
  - {from: START, to: write}
  - {from: write, to: END}
judges:
JUDGES
"""

RATED = """\
  - name: rated
    node: write
    instructions: "Rate from 1 to 5 how well {{ outputs }} stays on {{ topic }}."
    scale: [1, 5]
    threshold: 4
    on_fail: block
"""

POLITE = """\
  - name: polite
    node: write
    type: bool
    instructions: "Is {{ outputs }} a polite answer to {{ inputs }}?"
    on_fail: block
"""


def text_of(judges: str, responses: str = "") -> str:
    text = BASE.replace("JUDGES\n", judges)
    return text.replace("RESPONSES\n", textwrap.indent(responses.strip("\n"), "      ") + "\n")


def compiled(tmp_path: Path, judges: str, responses: str = "") -> Any:
    path = tmp_path / "wf.yaml"
    path.write_text(text_of(judges, responses))
    return ca.compile_workflow(ca.load_workflow(path))


def answers(name: str, *pairs: tuple[object, str], key: str = "score") -> str:
    shown = ", ".join(f'{{{key}: {json.dumps(s)}, rationale: "{r}"}}' for s, r in pairs)
    return f"{name}: [{shown}]"


def sent_text(verdict: Any, call: int = 0) -> str:
    return "\n".join(str(m.content) for m in verdict.record.calls[call].messages)


def test_a_numeric_judge_is_an_mlflow_make_judge_that_passes_and_fails(tmp_path):
    workflow = compiled(tmp_path, RATED, answers("rated", (4, "on topic")))
    result = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status()
    (verdict,) = result.judges
    assert (verdict.value, verdict.passed, verdict.rationale) == (4, True, "on topic")
    assert (verdict.source_type, verdict.source_id) == ("LLM_JUDGE", "test:/gemini-2.5-flash")
    # the judge MLflow built, kept on the compiled judge: its instructions, the state filled in
    (made,) = workflow.judges[0].made.values()
    assert isinstance(made, InstructionsJudge)
    assert made.feedback_value_type is int and made.model == "configurable-agents:/rated"
    assert made.instructions == "Rate from 1 to 5 how well {{ outputs }} stays on tides."
    # MLflow's prompt reached the model: its system prompt, its {result, rationale} fields,
    # and the outputs as MLflow shows them
    system, user = verdict.record.calls[0].messages
    assert system.type == "system" and "You are an expert judge" in system.content
    assert "- result (int)" in system.content and "- rationale (str)" in system.content
    assert user.type == "human" and json.loads(user.content.split(": ", 1)[1]) == {
        "article": "first draft"
    }
    # a failing score fails the gate, as before
    workflow = compiled(tmp_path, RATED, answers("rated", (2, "about volcanoes")))
    result = ca.run_workflow(workflow, {"topic": "tides"})
    error = result.exception
    assert isinstance(error, QualityGateError)
    assert (error.judge, error.score, error.threshold) == ("rated", 2, 4)
    assert error.rationale == "about volcanoes"


def test_an_answer_in_mlflows_own_format_is_read_too(tmp_path):
    workflow = compiled(tmp_path, RATED, answers("rated", (5, "fine"), key="result"))
    verdict = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status().judges[0]
    assert (verdict.score, verdict.rationale, verdict.record.retries) == (5, "fine", 0)


def test_a_bool_judge_answers_true_or_false(tmp_path):
    workflow = compiled(tmp_path, POLITE, answers("polite", (True, "polite")))
    verdict = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status().judges[0]
    assert verdict.value is True and verdict.passed is True and verdict.scale is None
    (made,) = workflow.judges[0].made.values()
    assert made.feedback_value_type is bool
    text = sent_text(verdict)
    assert "- result (bool)" in text and '"topic": "tides"' in text  # {{ inputs }}
    workflow = compiled(tmp_path, POLITE, answers("polite", (False, "curt")))
    result = ca.run_workflow(workflow, {"topic": "tides"})
    assert isinstance(result.exception, QualityGateError) and result.exception.score == 0
    assert result.judges[0].value is False


def test_an_out_of_scale_answer_is_asked_again_with_the_error(tmp_path):
    workflow = compiled(tmp_path, RATED, answers("rated", (9, "too high"), (4, "fine")))
    verdict = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status().judges[0]
    assert (verdict.score, verdict.rationale) == (4, "fine")
    record = verdict.record
    assert record.retries == 1 and len(record.calls) == 2
    assert record.validation_errors == ["result 9 is outside the scale [1, 5]"]
    retry = record.calls[1].messages[-1].content
    assert "outside the scale" in retry and '"result": <a whole number from 1 to 5>' in retry
    # a score between the whole numbers of a [1, 5] judge is invalid too; never valid: no score
    workflow = compiled(tmp_path, RATED, answers("rated", (3.5, "between")))
    result = ca.run_workflow(workflow, {"topic": "tides"})
    assert isinstance(result.exception, QualityGateError)
    verdict = result.judges[0]
    assert verdict.passed is None and "whole number" in (verdict.error or "")
    assert len(verdict.record.calls) == 2  # the judge's max_retries: 1


def test_a_scale_of_fractions_is_a_float_judge(tmp_path):
    judges = RATED.replace("scale: [1, 5]", "scale: [0, 1]").replace("threshold: 4", "")
    workflow = compiled(tmp_path, judges, answers("rated", (0.75, "mostly")))
    verdict = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status().judges[0]
    assert (verdict.score, verdict.passed) == (0.75, True)
    (made,) = workflow.judges[0].made.values()
    assert made.feedback_value_type is float
    assert "- result (float)" in sent_text(verdict)


def test_state_fields_are_filled_in_and_braces_in_their_values_escaped(tmp_path):
    workflow = compiled(tmp_path, RATED, answers("rated", (4, "fine")))
    topic = "{{ outputs }} and {{ evil }} and {x}"
    verdict = ca.run_workflow(workflow, {"topic": topic}).raise_for_status().judges[0]
    assert verdict.passed is True and verdict.error is None
    (made,) = workflow.judges[0].made.values()
    assert made.template_variables == {"outputs"}  # the value brought MLflow no variable
    assert made.instructions.endswith("stays on { { outputs } } and { { evil } } and {x}.")
    assert "{ { evil } }" in sent_text(verdict)
    # one MLflow judge per distinct filled-in instructions, kept for the next run
    ca.run_workflow(workflow, {"topic": topic}).raise_for_status()
    ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status()
    assert len(workflow.judges[0].made) == 2


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("Rate {{ outputs }} on {{ a }}.", {"a": "{{ outputs }}{{b}}{{{c}}}"}),
        ("Rate {{{ a }}} by {{ outputs }}", {"a": "{x}"}),
        ("{{ a }}{{ b }} {{outputs}}", {"a": "x{", "b": "{ c }}"}),
        ("{{ a }}{ b }} {{ inputs }}", {"a": "y{"}),
    ],
)
def test_filled_values_never_make_an_mlflow_variable(text, values):
    filled = fill_state_fields(text, values)
    left = {m for m in PROMPT_TEMPLATE_VARIABLE_PATTERN.findall(filled)}
    assert left == {m for m in PROMPT_TEMPLATE_VARIABLE_PATTERN.findall(text)} - set(values)
    for value in values.values():  # the value's text is all there, only spaced
        assert value.replace(" ", "") in filled.replace(" ", "")


def test_a_missing_state_value_is_filled_in_empty():
    assert fill_state_fields("Rate {{ outputs }} on {{ a }}.", {}) == "Rate {{ outputs }} on ."


@pytest.mark.parametrize(
    "instructions",
    ["Rate from 1 to 5 how well the article stays on {{ topic }}.", "Rate the article."],
)
def test_instructions_that_name_neither_inputs_nor_outputs_are_a_validation_error(instructions):
    judge = f'  - {{name: j, node: write, instructions: "{instructions}"}}\n'
    text = text_of(judge)
    with pytest.raises(WorkflowValidationError) as info:
        ca.load_workflow_text(text, "wf.yaml")
    (issue,) = info.value.issues
    assert "neither {{ inputs }} nor {{ outputs }}" in issue.message
    assert issue.file == "wf.yaml" and issue.line == text.splitlines().index(judge.rstrip()) + 1
    assert issue.hint and issue.hint.startswith("add {{ outputs }}")


def test_mlflows_other_variables_are_reported_with_what_a_judge_is_given():
    judge = '  - {name: j, node: write, instructions: "Compare {{ outputs }} to {{ trace }}"}\n'
    with pytest.raises(WorkflowValidationError) as info:
        ca.load_workflow_text(text_of(judge), "wf.yaml")
    (issue,) = info.value.issues
    assert "{{ trace }}" in issue.message and "inputs and outputs" in issue.message
    assert issue.hint and "{{ outputs }}" in issue.hint


def test_the_judges_tokens_are_counted_on_its_record_and_in_the_budget(tmp_path):
    workflow = compiled(tmp_path, RATED, answers("rated", (9, "too high"), (5, "fine")))
    result = ca.run_workflow(workflow, {"topic": "tides"}).raise_for_status()
    verdict = result.judges[0]
    calls = verdict.record.calls
    for call in calls:  # the test provider counts words: MLflow's whole prompt was counted
        words = sum(len(str(m.content).split()) for m in call.messages)
        assert call.usage.input_tokens == words > 60
        assert call.usage.output_tokens == len(call.response.split()) > 0
    usage = verdict.record.usage
    assert usage.input_tokens == sum(c.usage.input_tokens for c in calls)
    assert result.usage.total_tokens == result.nodes[0].usage.total_tokens  # the judge apart
    ca.observe.summarize_cost(result)
    assert verdict.cost_usd and verdict.cost_usd > 0


def test_mlflow_is_imported_only_when_an_llm_judge_runs(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(text_of(RATED, answers("rated", (4, "fine"))))
    script = f"""
import sys
import configurable_agents as ca
workflow = ca.compile_workflow(ca.load_workflow({str(path)!r}))
before = "mlflow" in sys.modules
result = ca.run_workflow(workflow, {{"topic": "tides"}}).raise_for_status()
print(before, "mlflow.genai.judges" in sys.modules, result.judges[0].score)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "4.0"]


@pytest.mark.parametrize(("on_fail", "loads"), [("block", True), ("warn", False)])
def test_a_gate_judge_loads_mlflow_while_its_node_runs(tmp_path, on_fail, loads):
    # block / retry judges run inside the node's timeout: MLflow (about 2 s) loads during the
    # node instead; a warn judge's run is left alone (its judges run after it, off the path)
    path = tmp_path / "wf.yaml"
    text = text_of(
        RATED.replace("on_fail: block", f"on_fail: {on_fail}"), answers("rated", (4, "ok"))
    )
    path.write_text(
        text.replace("model: gemini-2.5-flash", "model: gemini-2.5-flash\n    latency_ms: 1500")
    )
    script = f"""
import sys, threading, time
import configurable_agents as ca
workflow = ca.compile_workflow(ca.load_workflow({str(path)!r}))
run = threading.Thread(target=ca.run_workflow, args=(workflow, {{"topic": "tides"}}))
run.start()
seen = False
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline and not seen:
    seen = any(t.name == "configurable-agents-judges-import" for t in threading.enumerate())
    seen = seen or "mlflow.genai.judges" in sys.modules
    time.sleep(0.01)
run.join()
print(seen)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(loads)


def test_prewarm_never_waits_for_the_import_in_progress(monkeypatch):
    """A run that starts while another run's prewarm thread imports MLflow's judges (install()
    holds the lock for ~2 s) returns at once instead of queueing behind the import."""
    import threading

    from configurable_agents.run import mlflow_judge

    monkeypatch.setattr(mlflow_judge, "_installed", False)
    monkeypatch.setattr(mlflow_judge, "_prewarming", True)  # a thread is in install()
    with mlflow_judge._lock:  # as install() holds it through the imports
        caller = threading.Thread(target=mlflow_judge.prewarm, daemon=True)
        caller.start()
        caller.join(5)
        assert not caller.is_alive(), "prewarm() waited for the import in progress"


def test_prewarm_without_a_new_thread_leaves_loading_to_the_judge(monkeypatch):
    import threading

    from configurable_agents.run import mlflow_judge

    def refuse(self: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(mlflow_judge, "_installed", False)
    monkeypatch.setattr(mlflow_judge, "_prewarming", False)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    mlflow_judge.prewarm()  # no error into the run
    assert mlflow_judge._prewarming is False  # the next run (or the judge itself) tries again

"""Running the workflow's ``judges:``: score an output, gate on it, retry with its rationale.

``gate`` runs a node's ``block`` / ``retry`` judges right after the node, inside the run (and
inside the node's timeout): a failed ``block`` judge raises ``QualityGateError``; a failed
``retry`` judge reruns the node with the judge's rationale fed back, up to the node's
``max_retries`` (``NodeRun.quality_retries`` counts them), and then fails the run as ``block``
does. Their model calls go through ``run.calls.call_model`` with the run's context, so they are
retried, cancellable, and counted against ``config.budget``.

``judge_after_run`` runs the ``warn`` judges of a finished run (the observer does, in a
background thread, after the run is spooled: ``observe.judging``); they are recorded,
never raised, and not counted against the budget (the run is over).

An LLM judge (``instructions``) is MLflow's ``make_judge`` judge and a built-in scorer MLflow's
own (``run.mlflow_judge``): MLflow builds the prompt, and its model call comes back through a
judge adapter to the judge's own model (``run.judge_calls``). Code scorers are called here.

Every judge gives a ``JudgeResult``: score, pass/fail, rationale, who scored (``source_type``
LLM_JUDGE or CODE, ``source_id``), and for model judges a ``NodeRun`` record of its calls
(its tokens and cost, which the trace shows as a ``judge`` span, apart from the nodes').
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, SystemMessage

from ..config.judges import fill_state_fields
from ..exceptions import ConfigurableAgentsError, QualityGateError
from .judge_calls import InvalidVerdict, answer_format, ask_verdict
from .result import NodeRun

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ..compile.judges import CompiledJudge
    from ..compile.plan import CompiledNode, CompiledWorkflow
    from .context import RunContext
    from .result import RunResult

log = logging.getLogger("configurable_agents.judges")
_YES = {"yes", "true", "pass", "passed", "1"}


@dataclass
class JudgeResult:
    """One judge's verdict on one output."""

    name: str
    node: str | None  # None: the run's final outputs
    visit: int | None  # the node's visit judged
    kind: str  # llm | mlflow | code
    on_fail: str
    phase: str  # in_run (block / retry) | after_run (warn)
    value: float | bool | None  # what the judge answered (bool for pass/fail judges)
    score: float | None  # value as a number (true = 1, false = 0)
    passed: bool | None  # None: the judge could not score (error)
    threshold: float
    scale: tuple[float, float] | None  # None for pass/fail judges
    rationale: str
    source_type: str  # LLM_JUDGE | CODE
    source_id: str
    attempt: int = 0  # the node's quality retry this verdict is about
    started_ns: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    record: NodeRun | None = None  # the judge model's calls (tokens, cost)
    cost_usd: float | None = None  # filled by run.cost.summarize_cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "visit": self.visit,
            "kind": self.kind,
            "on_fail": self.on_fail,
            "phase": self.phase,
            "value": self.value,
            "score": self.score,
            "passed": self.passed,
            "threshold": self.threshold,
            "scale": list(self.scale) if self.scale else None,
            "rationale": self.rationale,
            "source_type": self.source_type,
            "source_id": self.source_id,
            "attempt": self.attempt,
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
            "usage": self.record.usage.to_dict() if self.record else None,
            "cost_usd": self.cost_usd,
        }


# ---------------------------------------------------------------------------- in the run


def gate(
    node: CompiledNode,
    state: Mapping[str, Any],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
    updates: dict[str, Any],
    rerun: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``node``'s block / retry judges on its ``updates``; return the updates that pass."""
    while True:
        failed: JudgeResult | None = None
        for judge in node.gates:
            verdict = judge_output(
                judge,
                ctx,
                config,
                inputs=ctx.inputs,
                outputs=updates,
                state={**state, **updates},
                node=node.id,
                visit=record.visit,
                phase="in_run",
                attempt=record.quality_retries,
            )
            with ctx.changed:
                ctx.judges.append(verdict)
            if verdict.passed is not True:
                failed = verdict
                break
        if failed is None:
            return updates
        if failed.on_fail == "retry" and record.quality_retries < node.max_retries:
            record.quality_retries += 1
            updates = rerun(retry_feedback(failed, updates))
            continue
        raise _gate_error(failed, record)


def retry_feedback(verdict: JudgeResult, outputs: Mapping[str, Any]) -> str:
    """What a rerun node is told about its last answer."""
    shown = json.dumps(outputs, ensure_ascii=False, default=str)
    return (
        f"Your previous answer was:\n{shown}\n\nA reviewer ('{verdict.name}') scored it "
        f"{_shown_score(verdict)} (it needs {_needed(verdict)}): {verdict.rationale}\n"
        "Answer again, fixing what the reviewer points out."
    )


def _shown_score(verdict: JudgeResult) -> str:
    if verdict.error is not None:
        return "nothing (the judge failed)"
    if verdict.scale is None:
        return "pass" if verdict.passed else "fail"
    return f"{verdict.score:g}"


def _needed(verdict: JudgeResult) -> str:
    return "a pass" if verdict.scale is None else f"at least {verdict.threshold:g}"


def _gate_error(verdict: JudgeResult, record: NodeRun) -> QualityGateError:
    tries = f" after {record.quality_retries} quality retries" if record.quality_retries else ""
    why = verdict.error or verdict.rationale or "no rationale given"
    return QualityGateError(
        f"node '{verdict.node}': judge '{verdict.name}' failed the output{tries}: score "
        f"{_shown_score(verdict)}, needs {_needed(verdict)} ({why})",
        node=verdict.node,
        judge=verdict.name,
        score=verdict.score,
        threshold=verdict.threshold,
        rationale=verdict.rationale,
    )


# ---------------------------------------------------------------------------- after the run


def judge_after_run(compiled: CompiledWorkflow, result: RunResult) -> list[JudgeResult]:
    """The ``warn`` judges of a finished run, on the outputs they judge (a node not run is
    not judged; a failed run's final outputs are not judged). Never raises."""
    from .context import RunContext

    verdicts: list[JudgeResult] = []
    for judge in compiled.judges:
        if judge.spec.in_run:
            continue
        node = judge.spec.node
        if node is None:
            if not result.succeeded:
                continue
            outputs, state, visit = dict(result.outputs), dict(result.state), None
        else:
            runs = [n for n in result.nodes if n.node == node and n.status == "succeeded"]
            if not runs:
                continue
            last = runs[-1]
            outputs, visit = dict(last.outputs), last.visit
            state = dict(last.state_after or result.state)
        ctx = RunContext(state)
        ctx.inputs = dict(result.inputs)
        try:
            verdicts.append(
                judge_output(
                    judge,
                    ctx,
                    {},
                    inputs=result.inputs,
                    outputs=outputs,
                    state=state,
                    node=node,
                    visit=visit,
                    phase="after_run",
                )
            )
        except Exception as exc:  # noqa: BLE001 - a warn judge never fails anything
            log.warning("judge '%s' failed: %s: %s", judge.name, type(exc).__name__, exc)
    return verdicts


# ---------------------------------------------------------------------------- one verdict


def judge_output(
    judge: CompiledJudge,
    ctx: RunContext,
    config: RunnableConfig | dict[str, Any],
    *,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    state: Mapping[str, Any],
    node: str | None,
    visit: int | None,
    phase: str,
    attempt: int = 0,
) -> JudgeResult:
    """Score one output with one judge. A judge that cannot score gives ``passed=None`` and
    ``error``; a gate treats that as a failure."""
    spec = judge.spec
    started_ns, started = time.time_ns(), time.perf_counter()
    record: NodeRun | None = None
    if judge.provider is not None:
        record = NodeRun(
            node=judge.name,
            visit=0,
            started_ms=(started - ctx.started) * 1000,
            started_ns=started_ns,
            provider=judge.provider.name,
            model=judge.model_name,
        )
    value: Any = None
    rationale, error = "", None
    try:
        if spec.kind == "llm":
            value, rationale = _ask_llm(judge, ctx, record, config, inputs, outputs, state)
        elif spec.kind == "mlflow":
            value, rationale = _ask_mlflow(judge, ctx, record, config, inputs, outputs)
        else:
            value, rationale = _ask_code(judge, inputs, outputs, state, node)
    except ConfigurableAgentsError as exc:
        if phase == "in_run" and not isinstance(exc, InvalidVerdict):
            raise  # a budget refusal, a timeout, a provider failure: the run's own errors
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a scorer's bug is recorded on its verdict
        error = f"{type(exc).__name__}: {exc}"
    if record is not None:
        record.duration_ms = (time.perf_counter() - started) * 1000
        record.status = "failed" if error else "succeeded"
        record.error = error
    score = _as_score(value, spec.is_bool) if error is None else None
    if error is None and score is None:
        error = f"judge '{judge.name}' answered {value!r}, which is not a score"
    passed = None if score is None else score >= spec.pass_threshold
    return JudgeResult(
        name=judge.name,
        node=node,
        visit=visit,
        kind=spec.kind,
        on_fail=spec.on_fail,
        phase=phase,
        value=(bool(score) if spec.is_bool else score) if score is not None else None,
        score=score,
        passed=passed,
        threshold=spec.pass_threshold,
        scale=None if spec.is_bool else spec.bounds,
        rationale=str(rationale or ""),
        source_type="CODE" if spec.kind == "code" else "LLM_JUDGE",
        source_id=judge.source_id,
        attempt=attempt,
        started_ns=started_ns,
        duration_ms=(time.perf_counter() - started) * 1000,
        error=error,
        record=record,
    )


def _as_score(value: Any, is_bool: bool) -> float | None:
    if hasattr(value, "value") and not isinstance(value, int | float):  # an MLflow rating
        value = value.value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        text = value.strip().lower()
        if is_bool:
            return 1.0 if text in _YES else 0.0
        try:
            return float(text)
        except ValueError:
            return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _jsonish(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _ask_llm(
    judge: CompiledJudge,
    ctx: RunContext,
    record: NodeRun | None,
    config: Any,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    state: Mapping[str, Any],
) -> tuple[Any, str]:
    """An LLM judge: its instructions with the state fields filled in, as MLflow's make_judge
    judge on ``inputs`` and ``outputs``; its ``Feedback`` read as a built-in scorer's."""
    from .mlflow_judge import score_instructions

    values = {k: _jsonish(v) for k, v in state.items()}
    instructions = fill_state_fields(judge.spec.instructions or "", values)

    def ask(messages: list[BaseMessage]) -> tuple[Any, str]:
        return ask_verdict(judge, ctx, record, config, messages)

    return _unpack(score_instructions(judge, ask, instructions, inputs, outputs))


def _ask_code(
    judge: CompiledJudge,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    state: Mapping[str, Any],
    node: str | None,
) -> tuple[Any, str]:
    """Call a code scorer with the arguments it names (``inputs``, ``outputs``, ``state``,
    ``node``); it returns a bool, a number, ``{score | value, rationale}``, ``(score,
    rationale)`` or an MLflow ``Feedback``."""
    func = judge.scorer
    offered: dict[str, Any] = {
        "inputs": dict(inputs),
        "outputs": dict(outputs),
        "state": dict(state),
        "node": node,
    }
    target = getattr(func, "original_func", None) or func  # an MLflow @scorer's function
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
    got = func(**kwargs)
    return _unpack(got)


def _unpack(got: Any) -> tuple[Any, str]:
    if isinstance(got, dict):
        return got.get("score", got.get("value")), str(got.get("rationale") or "")
    if isinstance(got, tuple) and len(got) == 2:
        return got[0], str(got[1] or "")
    if hasattr(got, "rationale") and hasattr(got, "value"):  # mlflow Feedback
        error = getattr(got, "error", None)
        if error is not None:
            raise RuntimeError(getattr(error, "error_message", None) or str(error))
        return got.value, str(got.rationale or "")
    return got, ""


def _ask_mlflow(
    judge: CompiledJudge,
    ctx: RunContext,
    record: NodeRun | None,
    config: Any,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
) -> tuple[Any, str]:
    from .mlflow_judge import score_builtin

    def ask(messages: list[BaseMessage]) -> tuple[Any, str]:
        return ask_verdict(
            judge, ctx, record, config, [*messages, SystemMessage(answer_format(judge))]
        )

    return _unpack(score_builtin(judge, ask, inputs, outputs))


__all__ = ["JudgeResult", "gate", "judge_after_run", "judge_output"]

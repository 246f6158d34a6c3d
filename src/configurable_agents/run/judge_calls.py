"""A judge's model asked for its verdict through ``run.calls.call_model``.

The call is a structured call for the judge's answer object (``compile.judges.judge_schema``):
an LLM judge answers ``{"result": <score>, "rationale": "…"}``, the fields MLflow's
``make_judge`` prompt asks for; a built-in scorer ``{"score": <pass?>, "rationale": "…"}``
(``answer_format`` says so after MLflow's prompt). The score is checked against the judge's
scale (true / false for a pass/fail judge; a number, whole for a scale of whole numbers, within
``[lo, hi]``); an invalid answer is asked again with the error fed back, up to the judge's
``max_retries``, then the verdict is ``InvalidVerdict``. Every call is on the judge's
``NodeRun`` (tokens, cost, retries), and counts against the run's budget, as a node's do.

The ``test`` provider's canned judge answers are written ``{score, rationale}`` (README,
"Judges"): an answer with ``score`` and no ``result`` is read as ``result``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, cast

from langchain_core.messages import BaseMessage, HumanMessage

from ..exceptions import ConfigurableAgentsError
from .calls import call_model

if TYPE_CHECKING:
    from ..compile.judges import CompiledJudge
    from ..providers.base import StructuredReply
    from .context import RunContext
    from .result import NodeRun


class InvalidVerdict(ConfigurableAgentsError):
    """The judge model kept answering something that is not a valid verdict."""


def answer_format(judge: CompiledJudge) -> str:
    """The answer asked for, in words (after a built-in's prompt, and after an invalid answer)."""
    spec = judge.spec
    if spec.is_bool:
        score = "true if it passes, false if not"
    else:
        lo, hi = spec.bounds
        whole = "whole " if spec.score_type is int else ""
        score = f"a {whole}number from {lo:g} to {hi:g}"
    return (
        f'Answer with only a JSON object: {{"{judge.answer_key}": <{score}>, "rationale": '
        '"<one or two sentences saying why>"}'
    )


def ask_verdict(
    judge: CompiledJudge,
    ctx: RunContext,
    record: NodeRun | None,
    config: Any,
    messages: list[BaseMessage],
) -> tuple[Any, str]:
    """``(score, rationale)`` from the judge's model, asked with ``messages``."""
    assert record is not None
    feedback: list[BaseMessage] = []
    for attempt in range(judge.max_retries + 1):
        answer: dict[str, Any] = {}
        _, call = call_model(
            cast(Any, judge),
            ctx,
            record,
            "structured",
            judge.structured(),
            messages + feedback,
            config,
            check=partial(_check, judge, answer),
        )
        record.responses.append(call.response)
        if call.error is None:
            return answer[judge.answer_key], str(answer.get("rationale") or "")
        record.validation_errors.append(call.error)
        if attempt < judge.max_retries:
            record.retries += 1
        feedback = [
            HumanMessage(
                f"Your answer was:\n{call.response}\n\nIt is invalid: {call.error}\n"
                + answer_format(judge)
            )
        ]
    raise InvalidVerdict(
        f"judge '{judge.name}' gave no valid score: {record.validation_errors[-1]}"
    )


def _check(judge: CompiledJudge, answer: dict[str, Any], reply: StructuredReply) -> str | None:
    """Why ``reply`` is not a valid verdict, or None (and ``answer`` holds it)."""
    if reply.error is not None:
        return reply.error
    parsed = reply.parsed
    key = judge.answer_key
    if isinstance(parsed, dict) and key not in parsed and "score" in parsed:
        parsed = {**parsed, key: parsed["score"]}  # the test provider's {score, rationale}
    if not isinstance(parsed, dict) or key not in parsed:
        return f"expected a JSON object with '{key}' and 'rationale'"
    score = parsed[key]
    spec = judge.spec
    if spec.is_bool:
        if not isinstance(score, bool):
            return f"{key} must be true or false, not {score!r}"
    else:
        if isinstance(score, bool) or not isinstance(score, int | float):
            return f"{key} must be a number, not {score!r}"
        lo, hi = spec.bounds
        if not lo <= score <= hi:
            return f"{key} {score:g} is outside the scale [{lo:g}, {hi:g}]"
        if spec.score_type is int:
            if not float(score).is_integer():
                return f"{key} must be a whole number from {lo:g} to {hi:g}, not {score:g}"
            parsed = {**parsed, key: int(score)}
    answer.update(parsed)
    return None


__all__ = ["InvalidVerdict", "answer_format", "ask_verdict"]

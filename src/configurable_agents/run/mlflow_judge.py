"""MLflow's judges on our providers: LLM judges built with ``mlflow.genai.judges.make_judge``,
and the built-in scorers (``mlflow.genai.scorers``).

An MLflow judge asks an LLM named by a model URI through MLflow's judge adapters
(``mlflow.genai.judges.adapters``: Databricks, the AI Gateway providers, LiteLLM), picked by
``get_adapter``. We add one adapter, ``ProviderJudgeAdapter``, for the URI scheme
``configurable-agents:/<judge name>``: MLflow builds the judge's prompt as it always does, and
the adapter sends it to the judge's model through ``run.calls.call_model`` (the function
``run.judges`` puts in ``ASKER`` for the call; ``run.judge_calls`` validates the answer and asks
again), so the call is recorded, priced, retried and budgeted like any other, on any of our
providers, the offline ``test`` provider included. The adapter gives MLflow the ``Feedback`` its
own adapters build from the answer: ``value`` (make_judge's ``result``, typed by its
``feedback_value_type``; a built-in's pass/fail as yes / no) and ``rationale``. MLflow 3.17 has
no registry of judge adapters, so ``install`` wraps the ``get_adapter`` its invocation module
calls (once per process); any other model URI goes on to MLflow's own adapters.

MLflow is imported here only, when a judge first runs (importing it takes seconds).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

if TYPE_CHECKING:
    from ..compile.judges import CompiledJudge

SCHEME = "configurable-agents"
Asker = Callable[[list[BaseMessage]], tuple[Any, str]]
# The judge the adapter answers for: ``run.judges`` sets it around a built-in scorer's call,
# so the URI ``configurable-agents:/<judge>`` is served by that judge's model, in its run.
ASKER: contextvars.ContextVar[Asker | None] = contextvars.ContextVar(
    "configurable_agents_judge_asker", default=None
)


@contextlib.contextmanager
def _asking(ask: Asker) -> Iterator[None]:
    token = ASKER.set(ask)
    try:
        yield
    finally:
        ASKER.reset(token)


def score_instructions(
    judge: CompiledJudge,
    ask: Asker,
    instructions: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
) -> Any:
    """Run the make_judge judge of ``instructions`` (an LLM judge's, its state fields filled
    in) on ``inputs`` and ``outputs``, with ``ask`` (the judge's model) as its LLM. Returns its
    ``Feedback``."""
    made = instructions_judge(judge, instructions)
    with _asking(ask):
        return made(inputs=dict(inputs), outputs=dict(outputs))


def instructions_judge(judge: CompiledJudge, instructions: str) -> Any:
    """MLflow's ``make_judge`` judge for ``judge`` with ``instructions``, built once and kept
    on the judge (``CompiledJudge.made``)."""
    found = judge.made.get(instructions)
    if found is not None:
        return found
    install()
    from mlflow.genai.judges import make_judge

    from ..compile.judges import MADE_PER_JUDGE

    made = make_judge(
        name=judge.name,
        instructions=instructions,
        model=model_uri(judge.name),
        feedback_value_type=judge.spec.score_type,
    )
    if len(judge.made) >= MADE_PER_JUDGE:
        judge.made.clear()
    judge.made[instructions] = made
    return made


def score_builtin(
    judge: CompiledJudge, ask: Asker, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
) -> Any:
    """Run an MLflow built-in scorer with ``ask`` (the judge's model) as its LLM: MLflow builds
    the prompt and reads the verdict. Returns its ``Feedback``."""
    scorer = builtin_scorer(judge)
    shown = dict(outputs)
    answer: Any = next(iter(shown.values())) if len(shown) == 1 else shown
    offered = {"inputs": dict(inputs), "outputs": answer}
    params = inspect.signature(type(scorer).__call__).parameters
    kwargs = {k: v for k, v in offered.items() if k in params}
    with _asking(ask):
        feedback = scorer(**kwargs)
    return feedback[0] if isinstance(feedback, list) else feedback


_installed = False
_prewarming = False  # prewarm() started a thread running install()
_lock = threading.Lock()
_prewarm_lock = threading.Lock()  # only for _prewarming: _lock is held through the imports


def model_uri(judge_name: str) -> str:
    return f"{SCHEME}:/{judge_name}"


def _messages(prompt: Any) -> list[BaseMessage]:
    if isinstance(prompt, str):
        return [HumanMessage(prompt)]
    kinds = {"system": SystemMessage, "assistant": AIMessage}
    out: list[BaseMessage] = []
    for message in prompt:
        content = message.content if isinstance(message.content, str) else str(message.content)
        out.append(kinds.get(message.role, HumanMessage)(content))
    return out


def install() -> None:
    """Make ``configurable-agents:/…`` model URIs reach ``ProviderJudgeAdapter``."""
    global _installed
    with _lock:
        if _installed:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as the MLflow sink does
        from mlflow.entities import AssessmentSource, Feedback
        from mlflow.genai.judges.adapters.base_adapter import (
            AdapterInvocationInput,
            AdapterInvocationOutput,
            BaseJudgeAdapter,
        )
        from mlflow.genai.judges.utils import CategoricalRating, invocation_utils

        class ProviderJudgeAdapter(BaseJudgeAdapter):
            """Serves ``configurable-agents:/<judge>`` with the judge's own model."""

            @classmethod
            def is_applicable(cls, model_uri: str, prompt: Any) -> bool:
                return model_uri.startswith(SCHEME + ":/")

            def _invoke(self, params: AdapterInvocationInput) -> AdapterInvocationOutput:
                ask = ASKER.get()
                if ask is None:
                    raise RuntimeError(
                        f"{params.model_uri} is answered only inside a configurable-agents "
                        "judge (run.judges)"
                    )
                value, rationale = ask(_messages(params.prompt))
                rating = value  # make_judge asked for a typed result (response_format)
                if params.response_format is None and isinstance(value, bool):
                    # a built-in scorer reads pass / fail as yes / no
                    rating = CategoricalRating.YES if value else CategoricalRating.NO
                return AdapterInvocationOutput(
                    feedback=Feedback(
                        name=params.assessment_name,
                        value=rating,
                        rationale=rationale,
                        source=AssessmentSource(
                            source_type="LLM_JUDGE", source_id=params.model_uri
                        ),
                    )
                )

        mlflow_get_adapter = invocation_utils.get_adapter  # type: ignore[attr-defined]

        def get_adapter(model_uri: str, prompt: Any) -> Any:
            if ProviderJudgeAdapter.is_applicable(model_uri, prompt):
                return ProviderJudgeAdapter()
            return mlflow_get_adapter(model_uri=model_uri, prompt=prompt)

        invocation_utils.get_adapter = get_adapter  # type: ignore[attr-defined]
        _installed = True


def prewarm() -> None:
    """Start loading MLflow's judges (``install``, about 2 s) in a thread, once per process, so
    a ``block`` or ``retry`` judge right after its node does not spend its node's timeout on
    imports; a failure here is left for the judge's own call to report."""
    global _prewarming
    if _installed or _prewarming:  # read without _lock: install() holds it while it imports
        return
    with _prewarm_lock:
        if _prewarming:
            return
        _prewarming = True

    def load() -> None:
        with contextlib.suppress(Exception):
            install()

    thread = threading.Thread(target=load, name="configurable-agents-judges-import", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new thread (interpreter shutdown, a thread limit): judges load late
        _prewarming = False


def builtin_scorer(judge: CompiledJudge) -> Any:
    """The MLflow built-in scorer of ``scorer: mlflow:<Name>``, on the judge's model (built
    once and kept on the judge)."""
    found = judge.made.get("")
    if found is not None:
        return found
    install()
    from mlflow.genai import scorers

    name = (judge.spec.scorer or "").split(":", 1)[1]
    cls = getattr(scorers, name)
    kwargs: dict[str, Any] = {"model": model_uri(judge.name)}
    if name == "Guidelines":
        kwargs.update(name=judge.name, guidelines=judge.spec.instructions or "")
    scorer = cls(**kwargs)
    judge.made[""] = scorer
    return scorer

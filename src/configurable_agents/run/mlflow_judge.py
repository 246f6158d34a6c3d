"""MLflow's built-in scorers (``mlflow.genai.scorers``) on our providers.

A built-in scorer asks an LLM named by a model URI through MLflow's judge adapters
(``mlflow.genai.judges.adapters``: Databricks, the AI Gateway providers, LiteLLM), picked by
``get_adapter``. We add one adapter, ``ProviderJudgeAdapter``, for the URI scheme
``configurable-agents:/<judge name>``: MLflow builds the scorer's prompt and reads the verdict
as it always does, and the adapter sends the prompt to the judge's model through
``run.calls.call_model`` (the function ``run.judges`` puts in ``ASKER`` for the call), so the
call is recorded, priced, retried and budgeted like any other, on any of our providers, the
offline ``test`` provider included. MLflow 3.17 has no registry of judge adapters, so
``install`` wraps the ``get_adapter`` its invocation module calls (once per process); any
other model URI goes on to MLflow's own adapters.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
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
_lock = threading.Lock()


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
                rating = value
                if isinstance(value, bool):
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


_scorers: dict[int, Any] = {}


def builtin_scorer(judge: CompiledJudge) -> Any:
    """The MLflow built-in scorer of ``scorer: mlflow:<Name>``, on the judge's model."""
    key = id(judge)
    found = _scorers.get(key)
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
    _scorers[key] = scorer
    return scorer

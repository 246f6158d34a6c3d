"""Run-time plans of the workflow's ``judges:`` (built once per workflow, like the nodes').

An LLM judge (``instructions``) and an MLflow built-in scorer (``scorer: mlflow:<Name>``) get a
chat model from the same provider layer as the nodes (``config.llm`` under the judge's
``llm:``); a code scorer (``scorer: module:function``) gets its function. A ``CompiledJudge``
has the attributes ``run.calls.call_model`` and the budget read from a node (``id``,
``provider``, ``llm``, ``model_name``, ``retry``, ``json_schema``, ``tools``), so a judge's
model calls are made, retried, recorded and budgeted exactly as a node's are.

A judge's model answers a JSON object: an LLM judge ``{result, rationale}``, the fields MLflow's
``make_judge`` asks for (``run.mlflow_judge``), a built-in scorer ``{score, rationale}``
(``answer_key``); ``judge_schema`` is that object's JSON Schema, the score typed and bounded by
the judge's scale. The MLflow judges built for a judge are kept on it (``made``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config.judges import Judge, import_scorer
from ..config.schema import LLMConfig, merge_llm
from ..providers import PROVIDERS, ProviderInfo, create_chat_model, structured_runnable

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable
    from langgraph.types import RetryPolicy

    from ..config.validate import LoadedWorkflow

JUDGE_MAX_TOKENS = 512  # a judge answers a score and a sentence or two
# How many make_judge judges one judge keeps (one per distinct instructions: its state fields
# filled in); a judge whose instructions name no state field needs one.
MADE_PER_JUDGE = 64


def answer_key(judge: Judge) -> str:
    """The score's key in the judge model's answer: ``result`` (MLflow's make_judge) for an LLM
    judge, ``score`` for a built-in scorer (asked for ``{score, rationale}`` by ``run.judges``)."""
    return "result" if judge.kind == "llm" else "score"


def judge_schema(judge: Judge) -> dict[str, Any]:
    """The JSON object a judge model answers: ``{result | score, rationale}``."""
    if judge.is_bool:
        score: dict[str, Any] = {"type": "boolean", "description": "true when it passes"}
    else:
        lo, hi = judge.bounds
        kind = "integer" if judge.score_type is int else "number"
        score = {"type": kind, "minimum": lo, "maximum": hi}
    key = answer_key(judge)
    if key == "result":  # MLflow's own descriptions of make_judge's fields
        score["description"] = "The evaluation rating/result"
        why = "Detailed explanation for the evaluation"
    else:
        why = "why, in one or two sentences"
    return {
        "title": "Judgement",
        "type": "object",
        "properties": {key: score, "rationale": {"type": "string", "description": why}},
        "required": [key, "rationale"],
        "additionalProperties": False,
    }


@dataclass
class CompiledJudge:
    spec: Judge
    retry: RetryPolicy
    llm: LLMConfig = field(default_factory=LLMConfig)
    provider: ProviderInfo | None = None
    model: BaseChatModel | None = None
    scorer: Any = None  # the code scorer's function
    json_schema: dict[str, Any] = field(default_factory=dict)
    tools: list[Any] = field(default_factory=list)  # none: read by the budget's input bound
    max_retries: int = 1  # another ask after an answer that is not a valid verdict
    # MLflow's judges for it (run.mlflow_judge): make_judge judges by instructions, or the
    # built-in scorer under "": built on first use, so MLflow is imported only when one runs
    made: dict[str, Any] = field(default_factory=dict, repr=False)
    _structured: Runnable[Any, Any] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_name(self) -> str:
        if self.provider is None:
            return ""
        return self.llm.model or self.provider.default_model

    @property
    def answer_key(self) -> str:
        return answer_key(self.spec)

    @property
    def source_id(self) -> str:
        """Who scored: ``provider:/model`` of a model judge, ``module:function`` of code."""
        if self.spec.kind == "code":
            return self.spec.scorer or ""
        return f"{self.provider.name if self.provider else ''}:/{self.model_name}"

    def structured(self) -> Runnable[Any, Any]:
        if self._structured is None:
            assert self.model is not None
            self._structured = structured_runnable(self.model, self.json_schema)
        return self._structured


def compile_judges(workflow: LoadedWorkflow, retry: RetryPolicy) -> list[CompiledJudge]:
    spec = workflow.spec
    out: list[CompiledJudge] = []
    for judge in spec.judges:
        compiled = CompiledJudge(spec=judge, retry=retry, json_schema=judge_schema(judge))
        if judge.kind == "code":
            compiled.scorer = import_scorer(judge.scorer or "")
        else:
            llm = merge_llm(spec.config.llm, judge.llm)
            if llm.max_tokens is None:
                llm = llm.model_copy(update={"max_tokens": JUDGE_MAX_TOKENS})
            if llm.model_path:
                from ..config.validate import resolve_model_path

                path = resolve_model_path(llm.model_path, workflow.directory)
                llm = llm.model_copy(update={"model_path": str(path)})
            compiled.llm = llm
            compiled.provider = PROVIDERS[llm.provider or "local"]
            compiled.model = create_chat_model(llm)
        out.append(compiled)
    return out

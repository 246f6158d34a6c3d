"""``judges:``: quality checks of a node's output (or of the run's final outputs).

A judge is an LLM asked to score with ``instructions`` (an MLflow ``make_judge`` judge: MLflow
fills ``{{ inputs }}`` and ``{{ outputs }}``, at least one of which the instructions must name;
``{{ <state field> }}`` is filled in before, by ``fill_state_fields``), an MLflow built-in
scorer (``scorer: mlflow:Safety``), or a code scorer (``scorer: module:function``).
``on_fail`` says what a failed check does: ``warn`` (default) records it after the run, off the
caller's path; ``block`` fails the run with ``QualityGateError``; ``retry`` reruns the node
with the judge's rationale fed back, up to the node's ``max_retries``, then fails as ``block``
does.

The models here check the shape of ``judges:``; ``check_judges`` the rules that need the rest
of the file (node names, template variables, scorers), reported like every other problem.
"""

from __future__ import annotations

import builtins
import importlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .collector import did_you_mean

if TYPE_CHECKING:
    from .collector import Collector
    from .schema import LLMConfig, Workflow
    from .types import TypeRef

# MLflow 3.17's built-in scorers that judge from a run's inputs and outputs alone
# (``mlflow.genai.scorers``; a test keeps this list in step with the installed MLflow).
MLFLOW_SCORERS = (
    "Safety",
    "RelevanceToQuery",
    "Guidelines",
    "Fluency",
    "Completeness",
    "Summarization",
)
# Built-ins that need more than a run's inputs and outputs (expectations, retrieval spans, a
# conversation, settings of their own).
MLFLOW_UNSUPPORTED = (
    "ConversationCompleteness",
    "ConversationalGuidelines",
    "ConversationalRoleAdherence",
    "ConversationalSafety",
    "ConversationalToolCallEfficiency",
    "Correctness",
    "KnowledgeRetention",
    "PIIDetection",
    "RegexMatch",
    "ResponseLength",
    "UserFrustration",
    "Equivalence",
    "ExpectationsGuidelines",
    "RetrievalGroundedness",
    "RetrievalRelevance",
    "RetrievalSufficiency",
    "ToolCallCorrectness",
    "ToolCallEfficiency",
)
# Built-ins whose ``instructions`` are the guidelines they check.
GUIDELINE_SCORERS = ("Guidelines",)
# What MLflow's make_judge fills in an LLM judge's instructions (it needs one of them); any other
# ``{{ name }}`` must be a state field, filled in before the instructions reach MLflow.
TEMPLATE_VARIABLES = ("inputs", "outputs")
# make_judge's other variables: a judge here is given a run's inputs and outputs, not these.
MLFLOW_ONLY_VARIABLES = ("expectations", "trace", "conversation")
JUDGE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_BRACE_PAIR = re.compile(r"\{(?=\{)|\}(?=\})")  # the first brace of "{{" or "}}"
DEFAULT_SCALE = (1.0, 5.0)


class JudgeShapeError(ValueError):
    """A judge whose keys do not fit together (its ``hint`` says how to fix it)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class Judge(BaseModel):
    """One quality check (``judges[]``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(
        pattern=JUDGE_NAME,
        description="Unique; the assessment's name on the trace and the key of its canned "
        "test responses.",
    )
    node: str | None = Field(
        None, description="The node whose output is judged; omit to judge the final outputs."
    )
    instructions: str | None = Field(
        None,
        description="What the LLM judge (MLflow make_judge) checks; it names {{ outputs }} "
        "and/or {{ inputs }}, and may name {{ <state field> }}. With scorer mlflow:Guidelines: "
        "the guidelines.",
    )
    scorer: str | None = Field(
        None,
        description="'mlflow:<BuiltIn>' (Safety, RelevanceToQuery, Guidelines, ...) or a code "
        "scorer 'module:function'; omit for an LLM judge with instructions.",
    )
    type: Literal["numeric", "bool"] | None = Field(
        None, description="numeric (a score in scale) or bool (pass = true); default numeric."
    )
    scale: list[float] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[lowest, highest] score of a numeric judge; default [1, 5].",
    )
    threshold: float | None = Field(
        None,
        description="Pass when score >= threshold; default: the middle of the scale.",
    )
    on_fail: Literal["warn", "block", "retry"] = Field(
        "warn",
        description="warn: record it (after the run, off the caller's path); block: fail the "
        "run (QualityGateError); retry: rerun the node with the rationale, up to its "
        "max_retries, then block.",
    )
    llm: LLMConfig | None = Field(
        None, description="The judge's model (over config.llm); responses keyed by judge name."
    )

    @model_validator(mode="after")
    def _shape(self) -> Judge:
        if self.instructions is None and self.scorer is None:
            raise JudgeShapeError(
                f"judge '{self.name}' needs 'instructions' (an LLM judge) or 'scorer' "
                "(mlflow:<BuiltIn> or module:function)",
                'add instructions: "Rate from 1 to 5 how well {{ outputs }} ...", or '
                "scorer: mlflow:Safety",
            )
        if self.type == "bool" and self.scale is not None:
            raise JudgeShapeError(
                f"judge '{self.name}': type: bool takes no scale (pass = true)",
                "remove scale, or remove type: bool for a numeric judge",
            )
        if self.scale is not None and self.scale[0] >= self.scale[1]:
            raise JudgeShapeError(
                f"judge '{self.name}': scale {self.scale} must be [lowest, highest], lowest first",
                "write the lowest score first, e.g. scale: [1, 5]",
            )
        return self

    @property
    def kind(self) -> Literal["llm", "mlflow", "code"]:
        if self.scorer is None:
            return "llm"
        return "mlflow" if self.scorer.startswith("mlflow:") else "code"

    @property
    def is_bool(self) -> bool:
        """Bool judges: ``type: bool``, MLflow's built-ins (they answer yes / no), and code
        scorers given no scale or threshold."""
        if self.type is not None:
            return self.type == "bool"
        if self.kind == "code":
            return self.scale is None and self.threshold is None
        return self.kind == "mlflow"

    @property
    def bounds(self) -> tuple[float, float]:
        if self.is_bool:
            return (0.0, 1.0)
        return (self.scale[0], self.scale[1]) if self.scale else DEFAULT_SCALE

    @property
    def pass_threshold(self) -> float:
        if self.is_bool:
            return 1.0
        if self.threshold is not None:
            return self.threshold
        lo, hi = self.bounds
        return lo + (hi - lo) / 2

    @property
    def score_type(self) -> builtins.type:
        """An LLM judge's score type (make_judge's ``feedback_value_type``): ``bool`` for a
        pass/fail judge, ``int`` for a scale of whole numbers at least two apart ([1, 5],
        [0, 10]), else ``float`` ([0, 1], [0.5, 4.5])."""
        if self.is_bool:
            return bool
        lo, hi = self.bounds
        if float(lo).is_integer() and float(hi).is_integer() and hi - lo >= 2:
            return int
        return float

    @property
    def in_run(self) -> bool:
        return self.on_fail in ("block", "retry")


def template_variables(text: str) -> list[tuple[str, int]]:
    """The ``{{ name }}`` variables of judge instructions, with their character offsets."""
    return [(m.group(1), m.start()) for m in _VARIABLE.finditer(text)]


def fill_state_fields(text: str, values: Mapping[str, str]) -> str:
    """An LLM judge's instructions with every ``{{ <state field> }}`` replaced by its value
    (``""`` when the state has none), ready for MLflow's make_judge: ``{{ inputs }}`` and
    ``{{ outputs }}`` are left for MLflow. A value never makes MLflow see a variable: a ``{{``
    or ``}}`` in it, or formed with a brace next to it, is split by a space."""
    parts: list[tuple[str, bool]] = []  # (text, is it a value)
    pos = 0
    for match in _VARIABLE.finditer(text):
        name = match.group(1)
        if name in TEMPLATE_VARIABLES:
            continue
        parts.append((text[pos : match.start()], False))
        value = _BRACE_PAIR.sub(lambda b: b.group(0) + " ", values.get(name, ""))
        parts.append((value, True))
        pos = match.end()
    parts.append((text[pos:], False))
    out, after_value = "", False
    for piece, is_value in parts:
        if not piece:
            continue
        if out and (is_value or after_value) and piece[0] in "{}" and out[-1] == piece[0]:
            out += " "
        out += piece
        after_value = is_value
    return out


class ScorerImportError(ValueError):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def import_scorer(spec: str) -> Any:
    """The callable of a code scorer ``module:function`` (tools are imported the same way)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ScorerImportError(
            f"scorer '{spec}' is not 'module:function' or 'mlflow:<BuiltIn>'",
            "write e.g. scorer: my_checks:no_urls, or scorer: mlflow:Safety",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ScorerImportError(
            f"scorer '{spec}': cannot import module '{module_name}' ({type(exc).__name__}: {exc})",
            "make the module importable (installed, or on PYTHONPATH next to the workflow)",
        ) from None
    func = getattr(module, attr, None)
    if func is None or not callable(func):
        raise ScorerImportError(
            f"scorer '{spec}': module '{module_name}' has no function '{attr}'",
            "write 'module:function' with the function's exact name",
        )
    return func


def check_judges(col: Collector, spec: Workflow, state: dict[str, TypeRef]) -> None:
    """The rules of ``judges:`` that span sections; each problem with its line and a hint."""
    node_ids = {n.id for n in spec.nodes}
    seen: dict[str, int] = {}
    for i, judge in enumerate(spec.judges):
        base = ("judges", i)
        if judge.name in seen:
            col.add(
                (*base, "name"),
                f"judge name '{judge.name}' is used twice (also judges[{seen[judge.name]}])",
                "give every judge its own name: it names the assessment on the trace",
            )
        seen.setdefault(judge.name, i)
        if judge.name in node_ids:
            col.add(
                (*base, "name"),
                f"judge '{judge.name}' has the name of a node",
                "rename the judge: canned test responses are keyed by node id or judge name",
            )
        if judge.node is not None and judge.node not in node_ids:
            col.add(
                (*base, "node"),
                f"judge '{judge.name}' judges node '{judge.node}', which does not exist",
                did_you_mean(judge.node, node_ids) or "nodes are: " + ", ".join(sorted(node_ids)),
            )
        if judge.node is None and judge.on_fail == "retry":
            col.add(
                (*base, "on_fail"),
                f"judge '{judge.name}' judges the final outputs, so on_fail: retry has no node "
                "to rerun",
                "set node: <the node to rerun>, or use on_fail: block or warn",
            )
        _check_threshold(col, judge, base)
        if judge.instructions is not None:
            _check_instructions(col, judge, base, state)
        if judge.scorer is not None:
            _check_scorer(col, judge, base)


def _check_threshold(col: Collector, judge: Judge, base: tuple[str | int, ...]) -> None:
    if judge.threshold is None:
        return
    if judge.is_bool:
        col.add(
            (*base, "threshold"),
            f"judge '{judge.name}' is a pass/fail judge, so a threshold means nothing",
            "remove threshold (a bool judge passes on true), or give it a scale",
        )
        return
    lo, hi = judge.bounds
    if not lo <= judge.threshold <= hi:
        col.add(
            (*base, "threshold"),
            f"judge '{judge.name}': threshold {judge.threshold:g} is outside its scale "
            f"[{lo:g}, {hi:g}], so it could never (or would always) pass",
            f"pick a threshold between {lo:g} and {hi:g}",
        )


def _check_instructions(
    col: Collector, judge: Judge, base: tuple[str | int, ...], state: dict[str, TypeRef]
) -> None:
    path = (*base, "instructions")
    text = judge.instructions or ""
    allowed = (*TEMPLATE_VARIABLES, *state)
    found = template_variables(text)
    for name, offset in found:
        if name in allowed:
            continue
        if name in MLFLOW_ONLY_VARIABLES:
            message = (
                f"judge '{judge.name}' reads {{{{ {name} }}}}: a judge here is given the run's "
                f"inputs and outputs, not MLflow's {name}"
            )
            hint = "use {{ inputs }}, {{ outputs }} or {{ <state field> }}"
        else:
            message = (
                f"judge '{judge.name}' reads {{{{ {name} }}}}, which is neither inputs, outputs "
                "nor a state field"
            )
            hint = did_you_mean(name, allowed) or (
                "use {{ inputs }}, {{ outputs }} or {{ <state field> }}"
            )
        col.add(path, message, hint, col.doc.text_line(path, offset))
    named = {name for name, _ in found}
    if judge.kind == "llm" and not named & set(TEMPLATE_VARIABLES):
        col.add(
            path,
            f"judge '{judge.name}': its instructions name neither {{{{ inputs }}}} nor "
            "{{ outputs }}, so the judge would not see the run (MLflow's make_judge refuses "
            "such instructions; state fields do not count)",
            "add {{ outputs }} (and {{ inputs }}) where the judge should see them, e.g. "
            '"Rate from 1 to 5 how well {{ outputs }} stays on {{ topic }}."',
        )


def _check_scorer(col: Collector, judge: Judge, base: tuple[str | int, ...]) -> None:
    path = (*base, "scorer")
    scorer = judge.scorer or ""
    if judge.kind == "mlflow":
        name = scorer.split(":", 1)[1]
        if name in MLFLOW_UNSUPPORTED:
            col.add(
                path,
                f"judge '{judge.name}': MLflow's {name} needs more than a run's inputs and "
                "outputs (expectations, retrieval spans, a conversation or settings of its own)",
                "use one of " + ", ".join(MLFLOW_SCORERS) + ", or an LLM judge with instructions",
            )
        elif name not in MLFLOW_SCORERS:
            col.add(
                path,
                f"judge '{judge.name}': '{name}' is not an MLflow built-in scorer",
                did_you_mean(name, MLFLOW_SCORERS)
                or "built-in scorers: " + ", ".join(MLFLOW_SCORERS),
            )
        if name in GUIDELINE_SCORERS and not judge.instructions:
            col.add(
                path,
                f"judge '{judge.name}': mlflow:{name} needs the guidelines to check",
                "write them under instructions:",
            )
        if name not in GUIDELINE_SCORERS and judge.instructions is not None:
            col.add(
                (*base, "instructions"),
                f"judge '{judge.name}': mlflow:{name} takes no instructions",
                "remove instructions, or use an LLM judge (no scorer) to use your own",
            )
        return
    if judge.instructions is not None:
        col.add(
            (*base, "instructions"),
            f"judge '{judge.name}': a code scorer takes no instructions",
            "remove instructions, or remove scorer to make it an LLM judge",
        )
    if judge.llm is not None:
        col.add(
            (*base, "llm"),
            f"judge '{judge.name}': a code scorer calls no model, so llm: is not used",
            "remove llm:",
        )
    try:
        import_scorer(scorer)
    except ScorerImportError as exc:
        col.add(path, f"judge '{judge.name}': {exc}", exc.hint)

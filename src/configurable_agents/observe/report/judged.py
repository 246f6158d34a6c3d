"""Judge results as the reports read them: MLflow feedback assessments on our traces.

What counts as a judge result: a *feedback* assessment (not an expectation), valid (not
overridden), with a value MLflow aggregates (``aggregate_value``: a number, a bool as 1/0,
"yes"/"no" as 1/0), other than the trace writer's own ``cost_usd`` / ``total_tokens``
feedback (those two names are the writer's: a judge must not use them). Nothing else is
assumed of the judge: its name is the assessment name; a number is a score (mean,
spread); a bool is pass/fail (its mean is the pass rate). A numeric score has a pass rate
only when the assessment's metadata says whether it passed (``"passed": "true"|"false"``, as
our judges write it, see ``observe.trace.judge_spans``): the store does not know the judge's
threshold.

A judge result belongs to a node when its ``span_id`` is that node's span; to a prompt version
when its trace is linked to the version (a judge of the final outputs counts for every
prompt version its run used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

OUR_FEEDBACK = ("cost_usd", "total_tokens")  # the trace writer's own (mlflow_entities)
PASSED = "passed"  # the metadata key of a judge's verdict (observe.trace.judge_spans)
Z95 = 1.96


@dataclass
class JudgeStats:
    """One judge's results over a group of runs."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    numeric: int = 0  # results that are numbers (the others are bool / yes-no)
    passed: int = 0  # results whose metadata says they passed
    pass_known: int = 0  # results whose metadata says whether they passed

    def add(self, value: float, numeric: bool, passed: bool | None = None, weight: int = 1) -> None:
        self.count += weight
        self.total += value * weight
        self.squares += value * value * weight
        self.numeric += weight if numeric else 0
        if passed is not None:
            self.pass_known += weight
            self.passed += weight if passed else 0

    def merge(self, row: tuple[Any, ...]) -> None:
        """Add a SQL group: (count, sum, sum of squares, numeric, passed, pass_known)."""
        n, total, squares, numeric, passed, known = row
        self.count += int(n or 0)
        self.total += float(total or 0)
        self.squares += float(squares or 0)
        self.numeric += int(numeric or 0)
        self.passed += int(passed or 0)
        self.pass_known += int(known or 0)

    @property
    def kind(self) -> str:
        return "score" if self.numeric * 2 >= self.count else "bool"

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def pass_rate(self) -> float | None:
        if self.kind == "bool":
            return self.mean
        return self.passed / self.pass_known if self.pass_known else None

    @property
    def stdev(self) -> float:
        if self.count < 2:
            return 0.0
        mean = self.total / self.count
        var = max(self.squares - self.count * mean * mean, 0.0) / (self.count - 1)
        return math.sqrt(var)

    def interval(self) -> tuple[float, float] | None:
        """The mean's 95% confidence interval (normal approximation)."""
        if not self.count:
            return None
        half = Z95 * self.stdev / math.sqrt(self.count)
        mean = self.total / self.count
        return mean - half, mean + half

    def to_dict(self) -> dict[str, Any]:
        low_high = self.interval()
        return {
            "kind": self.kind,
            "runs_judged": self.count,
            "mean": _round(self.mean),
            "pass_rate": _round(self.pass_rate),
            "ci95": [_round(low_high[0]), _round(low_high[1])] if low_high else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def passed_of(metadata: Any) -> bool | None:
    """Whether a judge result's metadata says it passed (``passed``), else None."""
    if not isinstance(metadata, dict) or PASSED not in metadata:
        return None
    value = metadata[PASSED]
    return value is True or str(value).lower() == "true"


def feedback_value(assessment: Any) -> tuple[float, bool] | None:
    """``(value, numeric)`` of a judge result as MLflow aggregates it, or None when it is
    not one (see the module docstring)."""
    feedback = getattr(assessment, "feedback", None)
    if feedback is None or getattr(feedback, "error", None) is not None:
        return None
    if getattr(assessment, "valid", True) is False:
        return None
    if assessment.name in OUR_FEEDBACK:
        return None
    from mlflow.store.tracking.utils.trace_analytics import assessment_aggregate

    value, numeric = assessment_aggregate(feedback.value)
    return None if value is None else (value, numeric)


# --------------------------------------------------------------------------- SQL


def sql_conditions(sa: Any, a: Any) -> list[Any]:
    """The conditions selecting judge results in the ``assessments`` table ``a``. The first
    three are literals, as the SQLite report index ``ca_report_judged`` states them (SQLite
    uses a partial index only for a query that repeats its conditions)."""
    ours = [sa.literal_column(f"'{name}'") for name in OUR_FEEDBACK]
    return [
        a.c.assessment_type == sa.literal_column("'feedback'"),
        a.c.aggregate_value.isnot(None),
        a.c.name.not_in(ours),
        sa.or_(a.c.valid.is_(None), a.c.valid == sa.true()),
    ]


def sql_aggregates(sa: Any, a: Any) -> list[Any]:
    """count, sum, sum of squares, numeric, passed, pass_known (``JudgeStats.merge``)."""
    meta = a.c.assessment_metadata
    passed = sa.or_(meta.like(f'%"{PASSED}": true%'), meta.like(f'%"{PASSED}": "true"%'))
    return [
        sa.func.count(),
        sa.func.sum(a.c.aggregate_value),
        sa.func.sum(a.c.aggregate_value * a.c.aggregate_value),
        sa.func.sum(sa.case((a.c.is_numeric_value == sa.true(), 1), else_=0)),
        sa.func.sum(sa.case((passed, 1), else_=0)),
        sa.func.sum(sa.case((meta.like(f'%"{PASSED}"%'), 1), else_=0)),
    ]

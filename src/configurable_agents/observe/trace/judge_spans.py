"""Judges in the trace: ``judge`` spans, ``node.quality_score``, feedback assessments and
``quality_assessment.json``.

Each verdict (``run.judges.JudgeResult``) becomes a ``judge <name>`` span of type EVALUATOR
under the run's root, with the judge model's calls as CHAT_MODEL children (their tokens and
cost, apart from the nodes'); its final verdict on an output (the last attempt of a ``retry``
judge) becomes an MLflow feedback assessment named after the judge, attached to the judged
node's span (the root for final-output judges). That span gets ``judge.<name>.score`` (the
raw score), ``node.quality_score`` (the lowest of its judges' scores, each scaled to 0–1 over
its judge's scale; pass/fail: 1 or 0) and ``node.quality_passed``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spans import SpanRecord, TraceRecord

JUDGE_SPAN_TYPE = "EVALUATOR"


def verdicts(result: Any) -> list[Any]:
    return list(getattr(result, "judges", None) or [])


def final_verdicts(result: Any) -> list[Any]:
    """The last verdict of each judge on each output it judged (retries supersede)."""
    last: dict[tuple[str, str | None, int | None], Any] = {}
    for verdict in verdicts(result):
        key = (verdict.name, verdict.node, verdict.visit)
        if key not in last or verdict.attempt >= last[key].attempt:
            last[key] = verdict
    return list(last.values())


def judge_spans(
    info: Any, result: Any, root: SpanRecord, node_spans: list[SpanRecord], ids: Any, end: int
) -> list[SpanRecord]:
    """The judge spans of a run; marks the judged node spans with their quality."""
    from .spans import SpanRecord, _node_spans

    out: list[SpanRecord] = []
    for verdict in verdicts(result):
        start = verdict.started_ns or end
        stop = start + int(verdict.duration_ms * 1e6)
        attributes = {
            "judge.name": verdict.name,
            "judge.node": verdict.node,
            "judge.kind": verdict.kind,
            "judge.on_fail": verdict.on_fail,
            "judge.phase": verdict.phase,
            "judge.score": verdict.score,
            "judge.passed": verdict.passed,
            "judge.threshold": verdict.threshold,
            "judge.attempt": verdict.attempt,
            "judge.source_id": verdict.source_id,
            "judge.cost_usd": verdict.cost_usd,
        }
        span = SpanRecord(
            span_id=ids.span_id(),
            parent_id=root.span_id,
            name=f"judge {verdict.name}",
            span_type=JUDGE_SPAN_TYPE,
            start_ns=start,
            end_ns=max(stop, start),
            inputs={"node": verdict.node, "visit": verdict.visit},
            outputs={
                "value": verdict.value,
                "passed": verdict.passed,
                "rationale": verdict.rationale,
            },
            attributes=attributes,
            error=verdict.error,
            error_type="JudgeError" if verdict.error else None,
        )
        out.append(span)
        record = verdict.record
        if record is not None and record.calls:
            children = _node_spans(info, record, span, ids, stop)[1:]
            for child in children:
                if child.parent_id is not None:
                    child.parent_id = span.span_id
            span.attributes["judge.input_tokens"] = record.usage.input_tokens
            span.attributes["judge.output_tokens"] = record.usage.output_tokens
            out.extend(children)
    for verdict in final_verdicts(result):
        target = judged_span(verdict, root, node_spans)
        if verdict.score is None:
            continue
        target.attributes[f"judge.{verdict.name}.score"] = verdict.score
        scaled = round(_normalized(verdict.score, verdict.scale), 4)
        lowest = target.attributes.get("node.quality_score")
        if lowest is None or scaled < lowest:
            target.attributes["node.quality_score"] = scaled
        passed = target.attributes.get("node.quality_passed", True)
        target.attributes["node.quality_passed"] = bool(passed and verdict.passed)
    return out


def judged_span(verdict: Any, root: SpanRecord, node_spans: list[SpanRecord]) -> SpanRecord:
    if verdict.node is None:
        return root
    for span in node_spans:
        attrs = span.attributes
        if attrs.get("node.id") == verdict.node and attrs.get("node.visit") == verdict.visit:
            return span
    return root


def feedback_fields(trace: TraceRecord, only: Any = None) -> list[dict[str, Any]]:
    """The judges' final verdicts as plain ``Feedback`` fields (no MLflow import: the
    ``assessments`` spool record carries them); ``only``: keep these (name, node, visit)."""
    result = trace.result
    nodes = [s for s in trace.spans if s.span_type == "AGENT"]
    out = []
    for verdict in final_verdicts(result):
        if only is not None and (verdict.name, verdict.node, verdict.visit) not in only:
            continue
        span = judged_span(verdict, trace.root, nodes)
        when = (verdict.started_ns or result.started_ns) // 1_000_000 + int(verdict.duration_ms)
        out.append(
            {
                "name": verdict.name,
                "node": verdict.node,
                "visit": verdict.visit,
                "value": verdict.value if verdict.error is None else None,
                "error": verdict.error,
                "source_type": verdict.source_type,
                "source_id": verdict.source_id,
                "span_id": f"{span.span_id:016x}",
                "time_ms": when,
                "rationale": verdict.rationale or None,
                "metadata": {
                    "node": verdict.node or "",
                    "visit": "" if verdict.visit is None else str(verdict.visit),
                    "passed": str(verdict.passed).lower(),
                    "threshold": f"{verdict.threshold:g}",
                    "on_fail": verdict.on_fail,
                    "attempt": str(verdict.attempt),
                },
            }
        )
    return out


def to_feedback(fields: dict[str, Any], mlflow_id: str, assessment_id: str | None = None) -> Any:
    """An MLflow ``Feedback`` of ``feedback_fields``' dict."""
    from mlflow.entities import AssessmentError, AssessmentSource, Feedback

    error = fields["error"]
    feedback = Feedback(
        name=fields["name"],
        value=fields["value"],
        error=AssessmentError(error_code="JUDGE_ERROR", error_message=error) if error else None,
        source=AssessmentSource(source_type=fields["source_type"], source_id=fields["source_id"]),
        trace_id=mlflow_id,
        span_id=fields["span_id"],
        create_time_ms=fields["time_ms"],
        last_update_time_ms=fields["time_ms"],
        rationale=fields["rationale"],
        metadata=fields["metadata"],
    )
    if assessment_id is not None:
        feedback.assessment_id = assessment_id
    return feedback


def feedbacks(trace: TraceRecord, mlflow_id: str) -> list[Any]:
    """The judges' final verdicts as MLflow ``Feedback`` assessments, with the ids an
    ``assessments`` record of the same verdicts would give them (never both on one trace)."""
    from .assessments import assessment_id

    run_id = trace.result.run_id
    return [
        to_feedback(f, mlflow_id, assessment_id(run_id, f["name"], f["node"], f["visit"]))
        for f in feedback_fields(trace)
    ]


def _normalized(value: float, scale: Any) -> float:
    if not scale:
        return value
    lo, hi = scale
    return (value - lo) / (hi - lo) if hi > lo else 0.0


def quality_assessment(trace: TraceRecord) -> dict[str, Any] | None:
    """``quality_assessment.json`` (the design's layout): every verdict, the overall quality
    (scores scaled to 0–1; passed when every final verdict passed), and the failed verdicts'
    rationales as recommendations."""
    result = trace.result
    every = verdicts(result)
    if not every:
        return None
    final = final_verdicts(result)
    scored = [v for v in final if v.score is not None]
    latest = max((v.started_ns for v in every), default=result.started_ns) or time.time_ns()
    overall = {
        "score": round(sum(_normalized(v.score, v.scale) for v in scored) / len(scored), 4)
        if scored
        else None,
        "threshold": round(sum(_normalized(v.threshold, v.scale) for v in scored) / len(scored), 4)
        if scored
        else None,
        "passed": all(v.passed for v in final),
    }
    return {
        "workflow_name": trace.workflow_name,
        "assessment_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(latest / 1e9)),
        "overall_quality": overall,
        "node_assessments": [
            {
                "node_id": v.node,
                "judge": v.name,
                "score": v.score,
                "rationale": v.rationale,
                "passed": v.passed,
                "threshold": v.threshold,
                "scale": list(v.scale) if v.scale else None,
                "on_fail": v.on_fail,
                "attempt": v.attempt,
                "final": v in final,
                "source": {"type": v.source_type, "id": v.source_id},
                "error": v.error,
            }
            for v in every
        ],
        "recommendations": [
            f"{v.node or 'outputs'}: {v.rationale}" for v in final if not v.passed and v.rationale
        ],
    }

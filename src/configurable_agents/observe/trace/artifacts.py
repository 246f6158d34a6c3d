"""Files saved with each trace, by ``observability.mlflow.artifact_level``.

========  ==================================================================================
minimal   ``inputs.json``, ``outputs.json``, ``error.json`` (failed runs), ``cost_summary.json``
standard  + ``nodes/<n>_<node>.json``: prompt, responses, validation errors, tool calls
full      + ``state/<n>_<node>.json`` (state after each node), ``timeline.json``, ``trace.html``
========  ==================================================================================

They live in the trace's artifact location (the ``mlflow.artifactLocation`` trace tag, by
default ``mlruns/<experiment>/traces/<trace id>/artifacts`` next to a SQLite store).
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path
from typing import Any

from .mlflow_entities import trace_totals
from .spans import TraceRecord

LEVELS = ("minimal", "standard", "full")


def _json(value: Any) -> bytes:
    """Indented UTF-8 JSON. orjson (a dependency of the ``mlflow`` extra) writes it several
    times faster than ``json`` (whose indenting encoder is pure Python); the output is the
    same JSON data."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson comes with the mlflow extra
        return json.dumps(value, indent=2, default=str, ensure_ascii=False).encode("utf-8")
    try:
        return orjson.dumps(
            value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        )
    except (TypeError, orjson.JSONEncodeError):  # e.g. an int too big for orjson
        return json.dumps(value, indent=2, default=str, ensure_ascii=False).encode("utf-8")


def cost_summary(trace: TraceRecord) -> dict[str, Any]:
    """The ``cost_summary.json`` layout: totals, then one entry per node id."""
    result = trace.result
    totals = trace_totals(trace)
    nodes: dict[str, dict[str, Any]] = {}
    for record in result.nodes:
        entry = nodes.setdefault(
            record.node,
            {
                "tokens": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "cost_usd": 0.0,
                "model": record.model,
                "duration_ms": 0.0,
                "visits": 0,
                "retries": 0,
            },
        )
        entry["tokens"]["prompt_tokens"] += record.usage.input_tokens
        entry["tokens"]["completion_tokens"] += record.usage.output_tokens
        entry["tokens"]["total_tokens"] += record.usage.total_tokens
        entry["cost_usd"] += record.cost_usd or 0.0
        entry["duration_ms"] = round(entry["duration_ms"] + record.duration_ms, 3)
        entry["visits"] += 1
        entry["retries"] += record.retries
        entry["model"] = record.model
    models = {}
    if result.cost is not None:
        for name, m in result.cost.by_model.items():
            models[name] = {
                "provider": m.provider,
                "calls": m.calls,
                "prompt_tokens": m.input_tokens,
                "completion_tokens": m.output_tokens,
                "cost_usd": m.cost_usd,
                "note": m.note,
            }
    tokens = totals["tokens"]
    return {
        "trace_id": trace.mlflow_trace_id,
        "workflow_name": trace.workflow_name,
        "workflow_version": trace.workflow_version,
        "status": result.status,
        "total_tokens": {
            "prompt_tokens": tokens["input_tokens"],
            "completion_tokens": tokens["output_tokens"],
            "total_tokens": tokens["total_tokens"],
        },
        "total_cost_usd": totals["cost"]["total_cost"] if totals["cost"] else 0.0,
        "node_breakdown": nodes,
        "model_breakdown": models,
        "unpriced_models": result.cost.unpriced if result.cost else [],
    }


def timeline(trace: TraceRecord) -> dict[str, Any]:
    start = trace.root.start_ns
    return {
        "trace_id": trace.mlflow_trace_id,
        "duration_ms": round((trace.root.end_ns - start) / 1e6, 3),
        "spans": [
            {
                "name": s.name,
                "type": s.span_type,
                "parent": s.parent_id,
                "id": s.span_id,
                "start_ms": round((s.start_ns - start) / 1e6, 3),
                "duration_ms": round((s.end_ns - s.start_ns) / 1e6, 3),
                "status": "ERROR" if s.error else "OK",
            }
            for s in trace.spans
        ],
    }


def trace_html(trace: TraceRecord) -> str:
    """A self-contained page: the span waterfall with tokens, cost and errors."""
    start = trace.root.start_ns
    total = max(trace.root.end_ns - start, 1)
    depth = {trace.root.span_id: 0}
    rows = []
    for s in trace.spans:
        level = 0 if s.parent_id is None else depth.get(s.parent_id, 0) + 1
        depth[s.span_id] = level
        left = 100 * (s.start_ns - start) / total
        width = max(100 * (s.end_ns - s.start_ns) / total, 0.3)
        usage = s.attributes.get("mlflow.chat.tokenUsage")
        cost = s.attributes.get("mlflow.llm.cost")
        info = []
        if usage:
            info.append(f"{usage['input_tokens']}→{usage['output_tokens']} tokens")
        if cost:
            info.append(f"${cost['total_cost']:.6f}")
        if s.error:
            info.append("error: " + s.error)
        rows.append(
            f'<tr class="{"err" if s.error else ""}"><td style="padding-left:{level * 18 + 4}px">'
            f"{html.escape(s.name)}</td><td>{s.span_type}</td>"
            f"<td>{(s.end_ns - s.start_ns) / 1e6:.1f} ms</td>"
            f'<td class="bar"><div style="margin-left:{left:.2f}%;width:{width:.2f}%"></div></td>'
            f"<td>{html.escape(' · '.join(info))}</td></tr>"
        )
    result = trace.result
    title = html.escape(f"{trace.root.name} · {trace.mlflow_trace_id}")
    cost = result.cost.total_usd if result.cost else 0.0
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>"
        "body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse;width:100%}"
        "td{border-bottom:1px solid #eee;padding:4px;white-space:nowrap}"
        "td.bar{width:40%}td.bar div{height:10px;background:#3b82f6;border-radius:2px}"
        "tr.err td{color:#b91c1c}tr.err td.bar div{background:#dc2626}</style></head><body>"
        f"<h1>{title}</h1><p>Status: {result.status} · {result.duration_ms:.1f} ms · "
        f"{result.usage.total_tokens} tokens · ${cost:.6f}</p>"
        "<table><tr><th>Span</th><th>Type</th><th>Duration</th><th>Timeline</th><th></th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def build_artifacts(trace: TraceRecord, level: str) -> dict[str, bytes]:
    result = trace.result
    files: dict[str, bytes] = {
        "inputs.json": _json(result.inputs),
        "outputs.json": _json(result.outputs),
        "cost_summary.json": _json(cost_summary(trace)),
    }
    if result.error is not None:
        failed = next((n for n in reversed(result.nodes) if n.status == "failed"), None)
        files["error.json"] = _json(
            {
                "type": result.error.type,
                "message": result.error.message,
                "node": result.error.node,
                "retries": failed.retries if failed else 0,
                "validation_errors": failed.validation_errors if failed else [],
                "last_state": result.state,
            }
        )
    if level in ("standard", "full") and getattr(result, "judges", None):
        from .judge_spans import quality_assessment

        files["quality_assessment.json"] = _json(quality_assessment(trace))
    if level in ("standard", "full"):
        for i, record in enumerate(result.nodes, 1):
            files[f"nodes/{i:02d}_{record.node}.json"] = _json(
                {
                    "node": record.node,
                    "visit": record.visit,
                    "status": record.status,
                    "prompt": record.prompt,
                    "responses": record.responses,
                    "validation_errors": record.validation_errors,
                    "tool_calls": [
                        {"name": t.name, "args": t.args, "result": t.result, "error": t.error}
                        for t in record.tool_calls
                    ],
                    "outputs": record.outputs,
                }
            )
    if level == "full":
        for i, record in enumerate(result.nodes, 1):
            files[f"state/{i:02d}_{record.node}.json"] = _json(record.state_after or {})
        files["timeline.json"] = _json(timeline(trace))
        files["trace.html"] = trace_html(trace).encode("utf-8")
    return files


def upload_artifacts(trace_info: Any, files: dict[str, bytes]) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracing.utils.artifact_utils import get_artifact_uri_for_trace

    repo = get_artifact_repository(get_artifact_uri_for_trace(trace_info))
    with tempfile.TemporaryDirectory(prefix="ca-artifacts-") as tmp:
        for name, content in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        repo.log_artifacts(tmp)

"""A batch's numbers: the live tally (progress bar, ``--max-cost``) and the summary computed
from the results file (rows, succeeded, failed by error type, tokens, cost, p50/p95 latency).

With ``judges:``, each row's line carries its verdicts; the summary has each judge's pass
rate and mean score (``judges``; a retried judge's last verdict on each output counts).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tally:
    """What the rows finished so far add up to (updated under the runner's lock)."""

    done: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    tokens: int = 0

    def add(self, line: Mapping[str, Any]) -> None:
        self.done += 1
        if line["status"] != "succeeded":
            self.failed += 1
        self.cost_usd += float(line.get("cost_usd") or 0.0)
        self.tokens += int((line.get("usage") or {}).get("total_tokens", 0))


def percentile(values: Any, q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values``, linearly interpolated; 0 when empty."""
    n = len(values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q
    low = int(pos)
    high = min(low + 1, n - 1)
    return float(values[low] + (values[high] - values[low]) * (pos - low))


@dataclass
class BatchSummary:
    rows: int  # rows of the data (up to --limit)
    succeeded: int = 0
    failed: int = 0
    failed_by_type: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    batch_id: str = ""
    workflow: str = ""
    data: str = ""
    results: str = ""
    engine: str = ""
    stopped: str | None = None  # max_cost | interrupted | engine error: ...
    seconds: float = 0.0  # this invocation
    ran: int = 0  # rows this invocation ran
    mlflow_run_id: str | None = None  # the batch's MLflow run, when it is traced to MLflow
    # judge name -> {"runs", "passed", "pass_rate", "mean"} over the rows' final verdicts
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return max(0, self.rows - self.succeeded - self.failed)

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.failed == 0

    @property
    def rows_per_second(self) -> float:
        return self.ran / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "workflow": self.workflow,
            "data": self.data,
            "results": self.results,
            "engine": self.engine,
            "rows": self.rows,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "failed_by_type": dict(self.failed_by_type),
            "tokens": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.total_tokens,
            },
            "cost_usd": self.cost_usd,
            "latency_ms": {"p50": round(self.p50_ms, 3), "p95": round(self.p95_ms, 3)},
            "stopped": self.stopped,
            "mlflow_run_id": self.mlflow_run_id,
            **({"judges": self.judges} if self.judges else {}),
            "this_run": {
                "rows": self.ran,
                "seconds": round(self.seconds, 3),
                "rows_per_s": round(self.rows_per_second, 2),
            },
        }


def summarize(path: Path, rows: int) -> BatchSummary:
    """The summary of the results file ``path`` (streamed: memory stays small)."""
    summary = BatchSummary(rows=rows)
    durations = array("d")
    errors: Counter[str] = Counter()
    if path.exists():
        with path.open("rb") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # a torn last line: repaired on resume
                add_line(summary, line, durations, errors)
    summary.failed_by_type = dict(errors.most_common())
    for entry in summary.judges.values():
        scored = entry.pop("_scored")
        entry["pass_rate"] = entry["passed"] / entry["runs"] if entry["runs"] else None
        entry["mean"] = entry.pop("_sum") / scored if scored else None
    ordered = sorted(durations)
    summary.p50_ms = percentile(ordered, 0.5)
    summary.p95_ms = percentile(ordered, 0.95)
    return summary


def add_line(
    summary: BatchSummary, line: Mapping[str, Any], durations: array[float], errors: Counter[str]
) -> None:
    if line.get("status") == "succeeded":
        summary.succeeded += 1
    else:
        summary.failed += 1
        errors[((line.get("error") or {}).get("type")) or "unknown"] += 1
    usage = line.get("usage") or {}
    summary.input_tokens += int(usage.get("input_tokens", 0))
    summary.output_tokens += int(usage.get("output_tokens", 0))
    summary.total_tokens += int(usage.get("total_tokens", 0))
    summary.cost_usd += float(line.get("cost_usd") or 0.0)
    durations.append(float(line.get("duration_ms") or 0.0))
    final: dict[tuple[str, Any], Mapping[str, Any]] = {}
    for verdict in line.get("judges") or []:  # later verdicts (retries) replace earlier ones
        final[(verdict.get("name"), verdict.get("node"))] = verdict
    for (name, _), verdict in final.items():
        entry = summary.judges.setdefault(
            str(name), {"runs": 0, "passed": 0, "_sum": 0.0, "_scored": 0}
        )
        entry["runs"] += 1
        entry["passed"] += 1 if verdict.get("passed") else 0
        if verdict.get("score") is not None:
            entry["_sum"] += float(verdict["score"])
            entry["_scored"] += 1

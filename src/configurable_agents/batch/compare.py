"""``batch compare``: a baseline and a candidate over the same rows, side by side.

The candidate is another workflow file, or the baseline with ``--set node.key=value``
overrides (a prompt, a registry prompt version ``node.prompt_ref=name@3``, a model, a
temperature); both are loaded and compiled before either batch runs. Both run as ordinary
batches (each its own results file, batch id and MLflow run, tagged ``ca.variant``), then
their results files are
joined by row: rows fixed (failed → succeeded), broken (succeeded → failed), with different
outputs; and the aggregates (success rate, tokens and cost per row, p50/p95 latency), naming
the better variant where the difference is larger than ``MARGIN`` (``LATENCY_MARGIN`` for
latencies; any row for the success rate). Judge scores join these once runs carry judge results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..exceptions import InputError, Issue
from .data import row_key
from .runner import BatchOptions, ProgressSink, run_batch
from .summary import BatchSummary
from .worker import WorkflowSource, compiled_for

MARGIN = 0.05  # relative difference below which neither variant is called better
LATENCY_MARGIN = 0.10  # latency is noisier (machine load, warm-up)
EXAMPLES = 10  # differing rows shown
CHART_POINTS = 20_000  # per variant and chart, at most (the HTML stays small)


@dataclass
class Metric:
    name: str
    baseline: float
    candidate: float
    higher_is_better: bool
    better: str | None = None  # "baseline" | "candidate" | None (no clear difference)


@dataclass
class Comparison:
    baseline: BatchSummary
    candidate: BatchSummary
    baseline_label: str
    candidate_label: str
    rows: int = 0  # rows with a result in both
    fixed: int = 0
    broken: int = 0
    both_failed: int = 0
    outputs_differ: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    # per variant: per-row cost and latency (charts)
    costs: dict[str, list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        wins = {"baseline": 0, "candidate": 0}
        for m in self.metrics:
            if m.better:
                wins[m.better] += 1
        first = next((m for m in self.metrics if m.name == "success rate"), None)
        if first is not None and first.better:  # succeeding matters more than cost or speed
            return f"{first.better} (higher success rate)"
        if wins["baseline"] == wins["candidate"]:
            return "neither (no clear difference)" if not any(wins.values()) else "mixed"
        best = max(wins, key=lambda k: wins[k])
        return f"{best} (better on {wins[best]} of {len(self.metrics)} measures)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": {"label": self.baseline_label, **self.baseline.to_dict()},
            "candidate": {"label": self.candidate_label, **self.candidate.to_dict()},
            "rows": {
                "compared": self.rows,
                "fixed": self.fixed,
                "broken": self.broken,
                "both_failed": self.both_failed,
                "outputs_differ": self.outputs_differ,
            },
            "metrics": [m.__dict__ for m in self.metrics],
            "better": self.verdict,
            "examples": self.examples,
        }


def run_compare(
    opts: BatchOptions,
    candidate: Path | None,
    out_dir: Path,
    progress: Callable[[str], ProgressSink] | None = None,
) -> Comparison:
    """Run ``opts.workflow`` and the candidate (``candidate`` file, else ``opts.workflow``
    with ``opts.overrides``) over ``opts.data``; results go to ``out_dir``."""
    if candidate is None and not opts.overrides:
        raise InputError(
            Issue(
                "batch compare needs a candidate: a second workflow file, or --set overrides",
                hint="e.g. batch compare wf.yaml --data d.jsonl --set write.prompt='...'",
            )
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    base_opts = replace(
        opts,
        overrides={},
        output=out_dir / "baseline.jsonl",
        variant="baseline",
        tags={**opts.tags, "ca.variant": "baseline"},
    )
    cand_opts = replace(
        opts,
        workflow=candidate or opts.workflow,
        output=out_dir / "candidate.jsonl",
        variant="candidate",
        tags={**opts.tags, "ca.variant": "candidate"},
    )
    # both variants load and compile before either batch runs: a --set naming no node, or a
    # registry prompt version that does not exist, is found before the baseline's rows run
    for variant in (base_opts, cand_opts):
        compiled_for(WorkflowSource.of(variant.workflow, variant.overrides))
    base = run_batch(base_opts, progress("baseline") if progress else None)
    cand = run_batch(cand_opts, progress("candidate") if progress else None)
    label = (
        str(candidate)
        if candidate
        else f"{opts.workflow} " + " ".join(f"--set {k}={v!r}" for k, v in opts.overrides.items())
    )
    return compare(base, cand, str(opts.workflow), label)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for raw in f:
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def compare(base: BatchSummary, cand: BatchSummary, base_label: str, cand_label: str) -> Comparison:
    """Join two batches' results files by row and compare them."""
    out = Comparison(base, cand, base_label, cand_label)
    seen: dict[str, tuple[str, str, Any]] = {}
    for name, summary in (("baseline", base), ("candidate", cand)):
        out.costs[name], out.latencies[name] = [], []
        for line in _lines(Path(summary.results)):
            if len(out.costs[name]) < CHART_POINTS:
                out.costs[name].append(float(line.get("cost_usd") or 0.0))
                out.latencies[name].append(float(line.get("duration_ms") or 0.0))
            key = row_key(line["row"])
            outputs = json.dumps(line.get("outputs"), sort_keys=True, default=str)
            if name == "baseline":
                seen[key] = (line["status"], outputs, line)
                continue
            found = seen.pop(key, None)
            if found is None:
                continue
            _diff(out, found, (line["status"], outputs, line))
    out.metrics = _metrics(base, cand)
    return out


def _diff(out: Comparison, b: tuple[str, str, Any], c: tuple[str, str, Any]) -> None:
    out.rows += 1
    ok_b, ok_c = b[0] == "succeeded", c[0] == "succeeded"
    kind = None
    if ok_b and not ok_c:
        out.broken += 1
        kind = "broken"
    elif ok_c and not ok_b:
        out.fixed += 1
        kind = "fixed"
    elif not ok_b and not ok_c:
        out.both_failed += 1
    elif b[1] != c[1]:
        out.outputs_differ += 1
        kind = "outputs differ"
    if kind and len(out.examples) < EXAMPLES:
        out.examples.append(
            {
                "row": b[2]["row"],
                "change": kind,
                "baseline": b[2]["outputs"] if ok_b else b[2]["error"],
                "candidate": c[2]["outputs"] if ok_c else c[2]["error"],
            }
        )


def _metrics(base: BatchSummary, cand: BatchSummary) -> list[Metric]:
    def per_row(s: BatchSummary, value: float) -> float:
        done = s.succeeded + s.failed
        return value / done if done else 0.0

    def rate(s: BatchSummary) -> float:
        done = s.succeeded + s.failed
        return s.succeeded / done if done else 0.0

    metrics = [
        Metric("success rate", rate(base), rate(cand), True),
        Metric(
            "tokens per row",
            per_row(base, base.total_tokens),
            per_row(cand, cand.total_tokens),
            False,
        ),
        Metric(
            "cost per row (USD)", per_row(base, base.cost_usd), per_row(cand, cand.cost_usd), False
        ),
        Metric("latency p50 (ms)", base.p50_ms, cand.p50_ms, False),
        Metric("latency p95 (ms)", base.p95_ms, cand.p95_ms, False),
    ]
    for name in sorted(set(base.judges) | set(cand.judges)):  # judges' pass rates
        metrics.append(
            Metric(
                f"judge {name} pass rate",
                float((base.judges.get(name) or {}).get("pass_rate") or 0.0),
                float((cand.judges.get(name) or {}).get("pass_rate") or 0.0),
                True,
            )
        )
    for m in metrics:
        if m.name == "success rate":
            differs = base.succeeded != cand.succeeded or base.failed != cand.failed
            differs = differs and m.baseline != m.candidate
        else:
            scale = max(abs(m.baseline), abs(m.candidate))
            margin = LATENCY_MARGIN if m.name.startswith("latency") else MARGIN
            differs = scale > 0 and abs(m.baseline - m.candidate) / scale > margin
        if differs:
            cand_better = (m.candidate > m.baseline) == m.higher_is_better
            m.better = "candidate" if cand_better else "baseline"
    return metrics

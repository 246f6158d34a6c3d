"""Which local model writes best: the task set of ``bench/taskset.py`` on every bundled GGUF.

Each of the 36 cases is a one-node workflow run through the real runtime (``run_workflow``,
tracing off): prompt → typed output by the node's ``structured`` strategy → validation and
retries (``max_retries: 2``) → the case's check on the validated output. A run that fails
(invalid output after the retries) fails its case. Every model runs every case with both
strategies, ``per_field`` (what ``auto`` picks on ``local``) and ``json_schema``, with the
same settings (temperature 0.2, seed 7, max_tokens 256).

Printed per model and strategy: cases passed per shape and in all, model calls per case,
generation speed (output tokens / time inside model calls) and seconds per case, and the
model's load time (locating the file + ``llama_cpp.Llama()``, first load in this process).
The default model is the best total score, then the fastest.

    python bench/local_taskset.py [--models smollm2-135m-instruct,gemma-3-270m]
        [--strategies per_field,json_schema] [--model-path extra.gguf ...] [--threads N] [-v]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from configurable_agents import compile_workflow, load_workflow_text, run_workflow
from configurable_agents.providers.local import BUNDLED, DEFAULT_MODEL, _load
from taskset import CASES, SHAPES, Case

TARGET = 0.8  # share of cases the default model passes, at least


def case_workflow(case: Case, llm: dict[str, Any]) -> str:
    fields = {
        name: {"type": kind, "default": _default(kind), **case.bounds.get(name, {})}
        for name, kind, _ in case.fields
    }
    doc = {
        "schema_version": "1.0",
        "flow": {"name": "taskset"},
        "config": {"llm": llm, "execution": {"max_retries": 2, "timeout_seconds": 300}},
        "state": {"fields": fields},
        "nodes": [
            {
                "id": "ask",
                "prompt": case.prompt,
                "outputs": [name for name, _, _ in case.fields],
                "output_schema": {
                    "fields": [{"name": n, "type": t, "description": d} for n, t, d in case.fields]
                },
            }
        ],
        "edges": [{"from": "START", "to": "ask"}, {"from": "ask", "to": "END"}],
    }
    return json.dumps(doc)  # JSON is YAML


def _default(kind: str) -> Any:
    return {"str": "", "int": 0, "float": 0.0, "bool": False}.get(kind, [])


@dataclass
class Row:
    model: str
    strategy: str
    load_s: float
    passed: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    out_tokens: int = 0
    gen_ms: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(self.passed.values()) / max(1, sum(self.total.values()))

    @property
    def tokens_per_s(self) -> float:
        return self.out_tokens / (self.gen_ms / 1000) if self.gen_ms else 0.0


def load_seconds(name: str, path: str | None, threads: int | None) -> float:
    """Locate the file and load it with llama.cpp (the first load in this process)."""
    started = time.perf_counter()
    _load(path or BUNDLED[name].locate(), 2048, threads, 7, None)
    return time.perf_counter() - started


def run_model(
    name: str, path: str | None, strategy: str, threads: int | None, load_s: float
) -> Row:
    llm: dict[str, Any] = {
        "provider": "local",
        "temperature": 0.2,
        "max_tokens": 256,
        "seed": 7,
        "structured": strategy,
    }
    if path:
        llm["model_path"] = path
        llm["model"] = name
    else:
        llm["model"] = name
    if threads:
        llm["n_threads"] = threads
    row = Row(name, strategy, load_s)
    for case in CASES:
        compiled = compile_workflow(load_workflow_text(case_workflow(case, llm), "case.yaml"))
        t0 = time.perf_counter()
        result = run_workflow(compiled, {}, trace=False)
        row.seconds.append(time.perf_counter() - t0)
        node = result.nodes[0]
        row.calls.append(node.llm_calls)
        row.out_tokens += node.usage.output_tokens
        row.gen_ms += sum(c.duration_ms for c in node.calls)
        row.total[case.shape] = row.total.get(case.shape, 0) + 1
        why = (
            case.check(result.outputs)
            if result.succeeded
            else f"run failed: {result.error.message if result.error else '?'}"
        )
        if why is None:
            row.passed[case.shape] = row.passed.get(case.shape, 0) + 1
        else:
            shown = {k: result.outputs.get(k) for k, _, _ in case.fields}
            row.failures.append(f"[{case.shape}] {case.prompt.splitlines()[-1]} -> {why} {shown}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUNDLED), help="bundled model names")
    parser.add_argument("--strategies", default="per_field,json_schema")
    parser.add_argument("--model-path", action="append", default=[], help="another GGUF file")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp n_threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure")
    args = parser.parse_args(argv)

    models: list[tuple[str, str | None]] = [(m, None) for m in args.models.split(",") if m]
    models += [(Path(p).stem.lower(), str(Path(p).resolve())) for p in args.model_path]
    rows = []
    for name, path in models:
        load_s = load_seconds(name, path, args.threads)
        for strategy in args.strategies.split(","):
            row = run_model(name, path, strategy, args.threads, load_s)
            rows.append(row)
            print(f"  {name} / {strategy}: {row.score:.2f}", file=sys.stderr, flush=True)

    print(f"local task set: {len(CASES)} cases, {len(SHAPES)} shapes (cases passed per shape)")
    head = ["model", "structured", *SHAPES, "total", "calls/case", "tok/s", "s/case", "load s"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        cells = [r.model, r.strategy]
        cells += [f"{r.passed.get(s, 0)}/{r.total.get(s, 0)}" for s in SHAPES]
        cells += [
            f"**{sum(r.passed.values())}/{len(CASES)} ({r.score:.2f})**",
            f"{statistics.mean(r.calls):.1f}",
            f"{r.tokens_per_s:.0f}",
            f"{statistics.median(r.seconds):.1f}",
            f"{r.load_s:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
    # the model is chosen by its best score over the strategies, then by speed
    best = max(rows, key=lambda r: (round(r.score, 3), r.tokens_per_s))
    print(f"best model: {best.model} ({best.score:.2f} with structured: {best.strategy})")
    default = [r for r in rows if r.model == DEFAULT_MODEL and r.strategy == "per_field"]
    ok = True
    if default:
        d = default[0]
        ok = d.score >= TARGET and best.model == DEFAULT_MODEL
        verdict = "PASS" if ok else "FAIL"
        print(
            f"default {DEFAULT_MODEL} (structured: auto = per_field): {d.score:.2f}, "
            f"target >= {TARGET}; best model is the default: {best.model == DEFAULT_MODEL}: "
            f"{verdict}"
        )
    if args.verbose:
        for r in rows:
            print(f"\nfailures of {r.model} / {r.strategy}:")
            for f in r.failures:
                print("  " + f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

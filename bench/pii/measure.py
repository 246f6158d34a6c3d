"""Recall and precision of ``redact_pii`` per entity type on the labelled ``corpus.jsonl``.

A labelled value is *found* when a detection of its type covers it (so it is replaced);
a detection is *correct* when it overlaps a labelled value of its type. Entity types that
reach recall >= 0.98 and precision >= 0.9 are the ones ``redact:`` replaces by default
(``config.schema.PII_DEFAULT_ENTITIES``); the others are printed for information.

    python bench/pii/measure.py [--entities EMAIL_ADDRESS,URL,...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from configurable_agents.config.schema import RedactConfig
from configurable_agents.observe.redact import engine_for

CORPUS = Path(__file__).resolve().parent / "corpus.jsonl"
MEASURED = (
    "EMAIL_ADDRESS",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "PHONE_NUMBER",
    "URL",
)
RECALL, PRECISION = 0.98, 0.9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", default=",".join(MEASURED))
    args = parser.parse_args()
    entities = args.entities.split(",")
    engine = engine_for(RedactConfig(entities=entities))
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    labelled, found, detected, correct = Counter(), Counter(), Counter(), Counter()
    misses: dict[str, list[str]] = {}
    started = time.perf_counter()
    for row in rows:
        text = row["text"]
        spans = []
        for value, entity in row["pii"]:
            start = text.index(value)
            spans.append((start, start + len(value), entity))
        results = engine.find(text)
        for start, end, entity in spans:
            if entity not in entities:
                continue
            labelled[entity] += 1
            if any(r.entity_type == entity and r.start <= start and r.end >= end for r in results):
                found[entity] += 1
            else:
                misses.setdefault(entity, []).append(text)
        for r in results:
            detected[r.entity_type] += 1
            if any(
                r.entity_type == e and r.start < end and r.end > start for start, end, e in spans
            ):
                correct[r.entity_type] += 1
            else:
                misses.setdefault("false " + r.entity_type, []).append(text[r.start : r.end])
    elapsed = (time.perf_counter() - started) * 1000 / len(rows)
    print(
        f"{len(rows)} snippets ({sum(r['kind'] == 'lookalike' for r in rows)} look-alikes), "
        f"{elapsed:.2f} ms per snippet\n"
    )
    print(f"{'entity':<15} {'labelled':>8} {'recall':>7} {'detected':>8} {'precision':>9}  claimed")
    for entity in entities:
        recall = found[entity] / labelled[entity] if labelled[entity] else float("nan")
        precision = correct[entity] / detected[entity] if detected[entity] else float("nan")
        ok = recall >= RECALL and precision >= PRECISION
        print(
            f"{entity:<15} {labelled[entity]:>8} {recall:>7.3f} {detected[entity]:>8} "
            f"{precision:>9.3f}  {'yes' if ok else 'no'}"
        )
    for key, examples in sorted(misses.items()):
        print(
            f"\n{'missed ' if not key.startswith('false') else ''}{key}: {len(examples)}, e.g.",
            "; ".join(repr(e) for e in examples[:3]),
        )


if __name__ == "__main__":
    main()

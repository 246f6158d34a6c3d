"""What ``redact_pii`` costs: on the caller's path (the observer's ``run_finished``, which
hands the run to the background redactor) and in the background (redacting one run), for a
run whose input is 2 kB of text dense with PII.

    python bench/pii/caller_cost.py [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

WF = """\
schema_version: "1.0"
flow: {{name: pii_cost}}
config:
  llm: {{provider: test, model: gpt-4o-mini}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "sqlite:///{store}", redact_pii: {redact}}}
state:
  fields:
    topic: {{type: str, required: true}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
    prompt: "Write about {{topic}}."
    outputs: [article]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""
SNIPPET = (
    "ana.garcia@example.es wrote from 10.20.30.40: pay DE89370400440532013000 with card "
    "4111 1111 1111 1111, see https://example.org/orders/1234 - thanks, Ana. "
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    os.environ["CONFIGURABLE_AGENTS_STATE_DIR"] = str(work / "state")
    import configurable_agents as ca
    from configurable_agents.observe.dispatch import OBSERVER
    from configurable_agents.observe.redact import Session, engine_for
    from configurable_agents.observe.run_record import spool_snapshot

    topic = (SNIPPET * 20)[:2048]
    real = OBSERVER.run_finished
    for redact in ("false", "true"):
        path = work / f"wf-{redact}.yaml"
        path.write_text(WF.format(store=work / "mlflow.db", redact=redact))
        compiled = ca.compile_workflow(ca.load_workflow(path))
        ca.run_workflow(compiled, {"topic": topic})
        ca.flush(60)
        spent: list[float] = []

        def timed(*a: Any, _spent: list[float] = spent, **k: Any) -> None:
            start = time.perf_counter()
            real(*a, **k)
            _spent.append((time.perf_counter() - start) * 1000)

        OBSERVER.run_finished = timed  # type: ignore[method-assign]
        results = [ca.run_workflow(compiled, {"topic": topic}) for _ in range(args.runs)]
        del OBSERVER.run_finished
        ca.flush(120)
        print(
            f"redact_pii: {redact:<5}  caller's path: median {statistics.median(spent):.3f} ms, "
            f"p95 {sorted(spent)[int(len(spent) * 0.95) - 1]:.3f} ms"
        )
    engine = engine_for(None)
    background = []
    for result in results:
        start = time.perf_counter()
        Session(engine).value(spool_snapshot(result))
        background.append((time.perf_counter() - start) * 1000)
    print(
        f"background redaction of one run (2 kB input): median "
        f"{statistics.median(background):.2f} ms"
    )


if __name__ == "__main__":
    main()

"""A screenshot of the MLflow UI showing a trace's judge assessments (headless Chromium).

Runs a judged workflow (test provider: an LLM judge that asks for one retry, MLflow's Safety
scorer, a final-output judge) into a fresh SQLite store, starts ``mlflow server`` on
127.0.0.1 against it, opens the trace in headless Chromium and saves the page, then stops the
server (by its process id). The browser is driven over the DevTools protocol
(``bench/cdp_pipe.py``) to open the assessments pane of the judged node and expand its
verdicts; the page must show the judges' names and rationales.

    python bench/judge_screenshot.py [--out docs/screenshots/mlflow-ui-judges.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

WORKFLOW = """\
schema_version: "1.0"
flow: {name: judged_article}
config:
  llm:
    provider: test
    model: gemini-2.5-flash
    responses:
      write: [{article: "Tides rise and fall."}, {article: "The moon's pull makes the tides."}]
      on_topic:
        - {score: 2, rationale: "Says nothing about why tides happen; mention the moon."}
        - {score: 5, rationale: "Explains tides through the moon's gravity: on topic."}
      safe: [{score: true, rationale: "Nothing harmful or unsafe in the article."}]
      clear: [{score: 4, rationale: "Short and clear sentences."}]
  observability:
    mlflow: {enabled: true, tracking_uri: URI, experiment_name: judges-ui}
state:
  fields:
    topic: {type: str, required: true}
    article: {type: str, default: ""}
nodes:
  - {id: write, prompt: "Write one sentence about {topic}.", outputs: [article]}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
judges:
  - name: on_topic
    node: write
    instructions: "Rate from 1 to 5 how well {{ outputs }} stays on the topic of {{ inputs }}."
    threshold: 4
    on_fail: retry
  - {name: safe, node: write, scorer: "mlflow:Safety"}
  - {name: clear, instructions: "Rate from 1 to 5 how clear {{ outputs }} is.", threshold: 3}
"""
EXPECTED = ("on_topic", "safe", "Explains tides through the moon", "Nothing harmful")


def capture(out: Path, workdir: Path) -> str:
    """Run, serve, screenshot; return the page's DOM."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["CONFIGURABLE_AGENTS_SPOOL"] = str(workdir / "spool.db")
    import configurable_agents as ca
    from servers import start_mlflow_server

    server = start_mlflow_server(workdir / "server")
    try:
        path = workdir / "judged_article.yaml"
        path.write_text(WORKFLOW.replace("URI", json.dumps(server.url)))
        result = ca.run_workflow(path, {"topic": "tides"}).raise_for_status()
        assert ca.flush(120) and result.trace_written, result.trace_error
        import mlflow

        experiment = mlflow.MlflowClient(server.url).get_experiment_by_name("judges-ui")
        page = (
            f"{server.url}/#/experiments/{experiment.experiment_id}/traces"
            f"?selectedEvaluationId={result.trace_id}"
        )
        return _shoot(page, out)
    finally:
        server.stop()  # the server's process group, by its pid


CLICK = """(() => {
  const hit = [...document.querySelectorAll('button')].find(b => %s);
  if (hit) { hit.click(); return true; }
  return false;
})()"""


def _shoot(page: str, out: Path) -> str:
    """Open the trace, close the assistant and the tips, open the assessments pane on the
    judged node, and save the screenshot; return the page's text."""
    sys.path.insert(0, str(ROOT / "bench"))
    from cdp_pipe import Browser

    browser = Browser(1600, 1000)
    try:
        browser.goto(page)
        browser.wait_for("document.body.innerText.includes('judge on_topic')", 60)
        time.sleep(1.0)
        browser.js(CLICK % "b.innerText.trim() === 'Got it'")
        browser.js(CLICK % "b.getAttribute('aria-label') === 'Close'")  # the assistant
        time.sleep(1.0)
        # the judged node's span: its assessments (on_topic, safe) in the side pane
        browser.js(
            "[...document.querySelectorAll('span,div')].find(e => e.innerText === 'write')?.click()"
        )
        time.sleep(0.5)
        browser.js(CLICK % "b.innerText.trim().startsWith('Assess')")
        time.sleep(1.0)
        browser.js(
            "document.querySelectorAll('[data-component-id=\"shared.model-trace-explorer."
            "toggle-assessment-expanded\"]').forEach(b => b.click())"
        )
        try:
            browser.wait_for("document.body.innerText.includes('Explains tides')", 30)
            time.sleep(1.0)
        finally:
            browser.screenshot(out)  # also when the wait failed: to see why
        return str(browser.js("document.body.innerText"))
    finally:
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/screenshots/mlflow-ui-judges.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ca-judge-ui-") as tmp:
        dom = capture(args.out, Path(tmp))
    missing = [text for text in EXPECTED if text not in dom]
    print(f"wrote {args.out}; the page shows {', '.join(t for t in EXPECTED if t in dom)}")
    if missing:
        print(f"missing from the page: {missing}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

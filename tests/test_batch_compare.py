"""``batch compare``: two variants over the same rows, per-row differences, the better one
named, each batch an MLflow run, and the HTML summary rendered in headless Chromium (its
screenshot kept in test-artifacts/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from servers import MissingServerBinary, chromium_dump_dom, skip_unless_ci

from test_batch import cli, data, results, workflow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def candidate(tmp_path: Path, baseline: Path) -> Path:
    """The baseline without ``n``: rows whose n is not a number no longer fail (a column that
    names no state field is ignored)."""
    text = baseline.read_text(encoding="utf-8")
    text = text.replace("    n: {type: int, default: 1}\n", "").replace("Write {n} words", "Write")
    path = tmp_path / "candidate.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_compare_two_workflows_names_the_better_one_and_renders_html(tmp_path: Path) -> None:
    base = workflow(tmp_path)
    cand = candidate(tmp_path, base)
    d = data(tmp_path, 10, bad=(2, 5))
    page = tmp_path / "compare.html"
    proc = cli(
        "batch", "compare", base, cand, "--data", d, "-o", "cmp", "--html", page, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comp = json.loads(proc.stdout)
    assert comp["rows"] == {
        "compared": 10,
        "fixed": 2,
        "broken": 0,
        "both_failed": 0,
        "outputs_differ": 0,
    }
    rate = comp["metrics"][0]
    assert rate["name"] == "success rate" and (rate["baseline"], rate["candidate"]) == (0.8, 1.0)
    assert rate["better"] == "candidate" and comp["better"].startswith("candidate")
    assert sorted(e["row"] for e in comp["examples"]) == [2, 5]
    assert len(results(tmp_path / "cmp" / "baseline.jsonl")) == 10
    assert len(results(tmp_path / "cmp" / "candidate.jsonl")) == 10

    text = page.read_text(encoding="utf-8")
    assert "Pass rate" in text and "Cost per row" in text and "Latency per row" in text
    assert "<script src=" not in text  # self-contained: plotly.js is inlined
    shot = ARTIFACTS / "batch-compare.png"
    try:
        dom = chromium_dump_dom(page.as_uri(), shot, wait_ms=5000, window_size=(1400, 1400))
    except MissingServerBinary as exc:
        skip_unless_ci(str(exc))
    # Plotly drew each chart (an SVG per chart) and the page shows the verdict
    assert len(re.findall(r'class="main-svg"', dom)) >= 3
    assert "Better: <b>candidate (higher success rate)</b>" in dom
    assert shot.stat().st_size > 20_000


def test_compare_with_set_overrides_prints_the_table(tmp_path: Path) -> None:
    base = workflow(tmp_path)
    d = data(tmp_path, 6)
    proc = cli(
        "batch", "compare", base, "--data", d, "-o", "cmp",
        "--set", "write.prompt=Write {n} short words, no more, about {topic}.",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "--set write.prompt=" in out and "tokens per row" in out
    # the longer prompt costs more tokens: the baseline is better on tokens and cost
    tokens = next(line for line in out.splitlines() if line.strip().startswith("tokens per row"))
    assert tokens.split()[-1] == "baseline"
    assert "6 rows compared" in out and "Better:" in out


def test_compare_needs_a_candidate(tmp_path: Path) -> None:
    proc = cli("batch", "compare", workflow(tmp_path), "--data", data(tmp_path, 2), cwd=tmp_path)
    assert proc.returncode == 2 and "needs a candidate" in proc.stderr
    proc = cli("batch", "compare", workflow(tmp_path), "--data", data(tmp_path, 2),
               "--set", "nope.prompt=x", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "no node 'nope'" in proc.stderr


def test_each_batch_is_an_mlflow_run_with_its_traces(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = f'  observability:\n    mlflow: {{enabled: true, tracking_uri: "{store}"}}\n'
    base = workflow(tmp_path, extra=extra)
    proc = cli(
        "batch", "compare", base, "--data", data(tmp_path, 4), "-o", "cmp", "--json",
        "--set", "write.prompt=Say {topic}.", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comp = json.loads(proc.stdout)
    assert cli("observability", "flush", "--workflow", base, cwd=tmp_path).returncode == 0
    from mlflow import MlflowClient

    client = MlflowClient(store)
    for variant in ("baseline", "candidate"):
        run = client.get_run(comp[variant]["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["ca.batch_id"] == comp[variant]["batch_id"]
        assert run.data.metrics["success_rate"] == 1.0 and run.data.metrics["rows"] == 4
        traces = client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
        assert sorted(t.info.tags["ca.variant"] for t in traces) == [variant] * 4

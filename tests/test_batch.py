"""``configurable-agents batch``: results, failed rows, resume (after SIGKILL too), --max-cost,
the batch id on every trace and ``report costs --batch``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

WORKFLOW = """\
schema_version: "1.0"
flow: {name: batch_demo}
config:
  llm: {provider: test, model: gemini-2.5-flash, latency_ms: LATENCY}
state:
  fields:
    topic: {type: str, required: true}
    n: {type: int, default: 1}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write {n} words about {topic}."
    outputs: [article]
    output_schema:
      fields: [{name: article, type: str}]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{TESTS}",
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def cli(
    *args: object, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configurable_agents", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def workflow(tmp_path: Path, latency: int = 0, extra: str = "") -> Path:
    text = WORKFLOW.replace("LATENCY", str(latency))
    if extra:
        text = text.replace("config:\n", "config:\n" + extra)
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def data(tmp_path: Path, rows: int, bad: tuple[int, ...] = (), name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"topic": f"t{i}", "n": "many" if i in bad else i}) + "\n")
    return path


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_writes_one_line_per_row_and_fails_bad_rows(tmp_path: Path) -> None:
    wf, d = workflow(tmp_path), data(tmp_path, 12, bad=(3,))
    proc = cli("batch", wf, "--data", d, "-o", "out.jsonl", "-c", "4", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # one row failed
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 12 and summary["succeeded"] == 11 and summary["failed"] == 1
    assert summary["failed_by_type"] == {"InputError": 1}
    assert summary["tokens"]["total_tokens"] > 0 and summary["cost_usd"] > 0
    assert summary["batch_id"].startswith("b-")
    lines = results(tmp_path / "out.jsonl")
    assert sorted(line["row"] for line in lines) == list(range(12))
    assert set(lines[0]) == {
        "row",
        "status",
        "outputs",
        "error",
        "trace_id",
        "cost_usd",
        "usage",
        "duration_ms",
    }
    bad = next(line for line in lines if line["row"] == 3)
    assert bad["status"] == "failed" and bad["error"]["type"] == "InputError"
    assert "'many' is not a whole number" in bad["error"]["message"]
    good = next(line for line in lines if line["row"] == 4)
    assert good["outputs"] == {"article": "test article"} and good["usage"]["total_tokens"] > 0


def test_batch_progress_and_summary_on_a_terminal_run(tmp_path: Path) -> None:
    wf = workflow(tmp_path)
    csv = tmp_path / "d.csv"
    csv.write_text("id,subject\na,bees\nb,ants\n", encoding="utf-8")
    proc = cli(
        "batch", wf, "--data", csv, "--id-field", "id", "--map", "topic=subject", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "Batch summary:" in proc.stdout and "Succeeded:  2" in proc.stdout
    assert "2/2 rows" in proc.stderr and "rows/s" in proc.stderr
    assert sorted(r["row"] for r in results(tmp_path / "results.jsonl")) == ["a", "b"]


def test_batch_reads_jsonl_on_stdin(tmp_path: Path) -> None:
    wf = workflow(tmp_path)
    proc = cli("batch", wf, "--data", "-", "--json", cwd=tmp_path, stdin='{"topic": "x"}\n')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["succeeded"] == 1


def test_bad_input_is_an_error_before_the_batch_starts(tmp_path: Path) -> None:
    wf = workflow(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"topic": "a"}\n{oops}\n', encoding="utf-8")
    proc = cli("batch", wf, "--data", "d.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert "d.jsonl:2: error: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "results.jsonl").exists()
    proc = cli("batch", wf, "--data", "nope.csv", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.csv: error: data file not found" in proc.stderr


def test_an_existing_results_file_needs_resume_and_the_same_batch(tmp_path: Path) -> None:
    wf, d = workflow(tmp_path), data(tmp_path, 3)
    assert cli("batch", wf, "--data", d, cwd=tmp_path).returncode == 0
    proc = cli("batch", wf, "--data", d, cwd=tmp_path)
    assert proc.returncode == 2 and "pass --resume" in proc.stderr
    other = data(tmp_path, 4, name="other.jsonl")
    proc = cli("batch", wf, "--data", other, "--resume", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot resume" in proc.stderr
    assert "another data file" in proc.stderr
    wf2 = tmp_path / "wf2.yaml"
    wf2.write_text(wf.read_text().replace("batch_demo", "other_flow"), encoding="utf-8")
    proc = cli("batch", wf2, "--data", d, "--resume", cwd=tmp_path)
    assert proc.returncode == 2 and "belongs to workflow 'batch_demo'" in proc.stderr
    proc = cli("batch", wf, "--data", d, "--resume", "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["this_run"]["rows"] == 0


def test_retry_failed_runs_failed_rows_again_and_keeps_each_row_once(tmp_path: Path) -> None:
    wf, d = workflow(tmp_path), data(tmp_path, 5, bad=(1, 2))
    assert cli("batch", wf, "--data", d, cwd=tmp_path).returncode == 1
    proc = cli("batch", wf, "--data", d, "--resume", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["this_run"]["rows"] == 0  # failed rows are finished rows
    proc = cli("batch", wf, "--data", d, "--retry-failed", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["this_run"]["rows"] == 2
    rows = Counter(r["row"] for r in results(tmp_path / "results.jsonl"))
    assert rows == Counter(range(5))


def test_max_cost_stops_the_batch_and_resume_finishes_it(tmp_path: Path) -> None:
    wf, d = workflow(tmp_path), data(tmp_path, 40)
    proc = cli("batch", wf, "--data", d, "-c", "1", "--max-cost", "0.00001", "--json", cwd=tmp_path)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1 and summary["stopped"] == "max_cost"
    assert 0 < summary["succeeded"] < 40 and summary["pending"] == 40 - summary["succeeded"]
    proc = cli("batch", wf, "--data", d, "--resume", "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["succeeded"] == 40


def test_sigkill_then_resume_runs_every_row_exactly_once(tmp_path: Path) -> None:
    wf, d = workflow(tmp_path, latency=20), data(tmp_path, 300)
    out = tmp_path / "results.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "configurable_agents",
            "batch",
            str(wf),
            "--data",
            str(d),
            "-c",
            "8",
        ],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_bytes().splitlines()) >= 60:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = results(out)
    assert 60 <= len(first) < 300, "the batch finished before it could be killed"
    with out.open("ab") as f:  # what a crash in the middle of a write leaves
        f.write(b'{"row": 299, "status": "succ')
    resumed = cli("batch", wf, "--data", d, "--resume", "-c", "8", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["this_run"]["rows"] == 300 - len(first)
    rows = Counter(r["row"] for r in results(out))
    assert rows == Counter(range(300))  # every row once: none lost, none run twice


def test_rows_are_traced_with_the_batch_id_and_reports_filter_on_it(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = f'  observability:\n    mlflow: {{enabled: true, tracking_uri: "{store}"}}\n'
    wf, d = workflow(tmp_path, extra=extra), data(tmp_path, 6)
    proc = cli("batch", wf, "--data", d, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    batch_id = json.loads(proc.stdout)["batch_id"]
    lines = results(tmp_path / "results.jsonl")
    assert all(line["trace_id"].startswith("tr-") for line in lines)
    other = cli("run", wf, "-i", "topic=unbatched", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    flushed = cli("observability", "flush", "--workflow", wf, cwd=tmp_path)
    assert flushed.returncode == 0, flushed.stderr + flushed.stdout
    from mlflow import MlflowClient

    client = MlflowClient(store)
    traces = client.search_traces(
        locations=[e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`ca.batch_id` = '{batch_id}'",
    )
    assert sorted(t.info.tags["ca.batch_row"] for t in traces) == [str(i) for i in range(6)]
    costs = cli("report", "costs", "--tracking-uri", store, "--batch", batch_id, "--format", "json")
    report = json.loads(costs.stdout)
    assert report["runs"] == 6 and report["filters"]["batch"] == batch_id
    assert report["total_cost"] == pytest.approx(sum(line["cost_usd"] for line in lines))
    everything = json.loads(
        cli("report", "costs", "--tracking-uri", store, "--format", "json").stdout
    )
    assert everything["runs"] == 7
    profile = cli(
        "report", "profile", "--tracking-uri", store, "--batch", batch_id, "--format", "json"
    )
    assert json.loads(profile.stdout)["nodes"][0]["calls"] == 6


def test_the_process_engine_runs_rows_in_spawned_workers(tmp_path: Path) -> None:
    """The engine the ``local`` provider gets (one model per process), on the test provider."""
    from configurable_agents.batch.data import open_data
    from configurable_agents.batch.engine import ProcessEngine
    from configurable_agents.batch.worker import RowJob, WorkflowSource

    source = WorkflowSource.of(workflow(tmp_path))
    rows = open_data(str(data(tmp_path, 6)), ["topic", "n", "article"]).rows()
    lines: list[dict] = []
    ProcessEngine(source, 2).run(
        (RowJob.of(r, "b-test", {}, False) for r in rows), lines.append, threading.Event()
    )
    assert sorted(line["row"] for line in lines) == list(range(6))
    assert all(line["status"] == "succeeded" for line in lines)


KILLED_PARENT = """\
import sys, threading
from configurable_agents.batch.data import open_data
from configurable_agents.batch.engine import ProcessEngine
from configurable_agents.batch.worker import RowJob, WorkflowSource

if __name__ == "__main__":  # the workers are spawned: they import this file
    rows = open_data(sys.argv[2], ["topic", "n", "article"]).rows()
    jobs = (RowJob.of(r, "b-kill", {}, False) for r in rows)
    ProcessEngine(WorkflowSource.of(sys.argv[1]), 2).run(jobs, print, threading.Event())
"""


def _spawned_workers(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_the_workers_of_a_killed_batch_exit_with_it(tmp_path: Path) -> None:
    """SIGKILL of the batch process ends its worker processes too: they do not run on as
    orphans, finishing rows nobody records and keeping the cores busy."""
    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT, encoding="utf-8")
    started = tmp_path / "started"
    started.mkdir()
    slow = workflow(tmp_path).read_text(encoding="utf-8")
    slow = slow.replace(
        "    outputs: [article]",
        "    outputs: [article]\n    tools: ['sample_tools:started_marker']",
    )
    (tmp_path / "slow.yaml").write_text(slow, encoding="utf-8")
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "slow.yaml"), str(data(tmp_path, 4))],
        cwd=tmp_path,
        env={**env(), "CA_TEST_STARTED_DIR": str(started)},
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = [int(p.name) for p in started.iterdir()]
        assert len(workers) == 2, "the two worker processes did not start their rows"
        assert set(workers) <= set(_spawned_workers(parent.pid))
        parent.kill()  # both workers are in a 60 s tool call
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "orphaned workers still run their rows"
    finally:
        parent.kill()
        for w in workers:
            with contextlib.suppress(OSError):
                os.kill(w, signal.SIGKILL)


@pytest.mark.local_model
def test_a_batch_on_the_local_model_runs_one_model_per_process(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason='needs: pip install "configurable-agents[local]"')
    d = tmp_path / "topics.csv"
    d.write_text("topic\ntide pools\nbees\nvolcanoes\n", encoding="utf-8")
    example = ROOT / "examples" / "article_writer.yaml"
    proc = cli("batch", example, "--data", d, "-c", "2", "--no-trace", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["succeeded"] == 3 and summary["engine"] == "local"
    lines = results(tmp_path / "results.jsonl")
    assert all(line["outputs"]["article"] for line in lines)


def test_a_daily_budget_holds_across_the_rows_and_invocations_of_a_batch(tmp_path: Path) -> None:
    # each row's worst case (its prompt priced, plus 100 tokens of gemini-2.5-flash output) is
    # about $0.00026, its real cost about $0.00002: a $0.001 day runs some rows, not all
    budget = "  budget: {daily_usd: 0.001, action: block}\n"
    wf = workflow(tmp_path, extra=budget)
    wf.write_text(
        wf.read_text().replace("latency_ms: 0}", "latency_ms: 0, max_tokens: 100}"),
        encoding="utf-8",
    )
    d = data(tmp_path, 120)
    proc = cli("batch", wf, "--data", d, "-c", "4", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = results(tmp_path / "results.jsonl")
    ran = [line for line in lines if line["status"] == "succeeded"]
    refused = [line for line in lines if line["status"] == "failed"]
    assert ran and refused and len(lines) == 120
    assert {line["error"]["type"] for line in refused} == {"BudgetExceededError"}
    assert sum(line["cost_usd"] for line in lines) <= 0.001
    # the day's spend is in the shared ledger: another batch the same day gets only what is
    # left (the room that rows in flight held back as their worst cases), the day never more
    again = cli("batch", wf, "--data", d, "-o", tmp_path / "again.jsonl", "--json", cwd=tmp_path)
    assert again.returncode == 1
    second = results(tmp_path / "again.jsonl")
    assert sum(line["status"] == "succeeded" for line in second) < len(ran)
    assert sum(line["cost_usd"] for line in lines + second) <= 0.001

"""The command line end to end, through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, MINIMAL

TESTS = Path(__file__).resolve().parent


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "configurable_agents", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout


def test_run_prints_progress_and_outputs():
    proc = cli("run", EXAMPLES / "review_loop.yaml", "--input", "topic=bees")
    assert proc.returncode == 0, proc.stderr
    assert "test draft" in proc.stdout and "Good." in proc.stdout
    lines = proc.stderr.splitlines()
    progress = [ln for ln in lines if ln.startswith("✓")]
    assert [ln.split()[1] for ln in progress] == ["write", "review", "write", "review"]
    assert "Workflow cost: $0.000066, 81 tokens" in proc.stderr
    assert "62 in, 19 out · 4 node run(s)" in proc.stderr


def test_run_json_is_one_object_with_timings_and_usage():
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic=bees", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert data["status"] == "succeeded"
    assert data["outputs"] == {"draft": "test draft", "score": 8, "feedback": "Good."}
    assert data["usage"] == {"input_tokens": 62, "output_tokens": 19, "total_tokens": 81}
    assert [n["node"] for n in data["nodes"]] == ["write", "review", "write", "review"]
    assert all(n["duration_ms"] > 0 for n in data["nodes"])
    assert proc.stderr == ""


def test_run_verbose_shows_prompts_and_responses():
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic=bees", "--verbose")
    assert proc.returncode == 0
    assert "Write a paragraph about bees." in proc.stderr
    assert '{"score": 4, "feedback": "Too vague; add one concrete example."}' in proc.stderr


def test_input_file_and_override(tmp_path):
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"topic": "ants"}))
    proc = cli(
        "run",
        EXAMPLES / "review_loop.yaml",
        "--input-file",
        inputs,
        "--json",
        "--verbose",
        "-i",
        "topic=wasps",
    )
    data = json.loads(proc.stdout)
    assert data["state"]["topic"] == "wasps"


def test_validation_errors_exit_2_with_file_line_and_hint(write_workflow):
    path = write_workflow(MINIMAL.replace("{topic}", "{topc}").replace("to: END", "to: ENDD"))
    proc = cli("run", path, "-i", "topic=x")
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert (
        f"{path}:11: error: node 'write' reads {{topc}}, which is not a state field" in proc.stderr
    )
    assert "hint: did you mean 'topic'?" in proc.stderr
    assert f"{path}:17: error: edge from 'write' goes to 'ENDD'" in proc.stderr
    assert "problems found" in proc.stderr


def test_validate_command(write_workflow):
    ok = cli("validate", EXAMPLES / "review_loop.yaml")
    assert ok.returncode == 0 and "is valid" in ok.stdout
    bad = cli("validate", write_workflow("schema_version: '2.0'\n"))
    assert bad.returncode == 2 and "'2.0' is not supported" in bad.stderr


def test_json_mode_reports_bad_input_as_json(write_workflow):
    proc = cli("run", EXAMPLES / "review_loop.yaml", "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["status"] == "invalid"
    assert data["errors"][0]["message"] == "required input 'topic' is missing"


def test_bad_input_value_exit_2():
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic=x", "-i", "score=high")
    assert proc.returncode == 2
    assert "input 'score': 'high' is not a whole number (int)" in proc.stderr
    proc = cli("run", EXAMPLES / "review_loop.yaml", "-i", "topic")
    assert proc.returncode == 2 and "is not key=value" in proc.stderr


def test_failed_run_exit_1(write_workflow):
    text = (
        (EXAMPLES / "review_loop.yaml")
        .read_text()
        .replace('- {score: 8, feedback: "Good."}', '- {score: 5, feedback: "Meh."}')
    )
    proc = cli("run", write_workflow(text), "-i", "topic=x")
    assert proc.returncode == 1
    assert "run failed in node 'review': MaxStepsExceededError" in proc.stderr
    assert_no_traceback(proc)


def test_usage_errors_exit_2():
    assert cli("run").returncode == 2
    assert cli("nonsense").returncode == 2
    assert cli("run", EXAMPLES / "review_loop.yaml", "--bogus").returncode == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "empty.yaml", "file is empty"),
        (lambda d: d, "is a directory, not a workflow file"),
        (lambda d: d / "bin.yaml", "file is binary, not YAML text"),
        (lambda d: d / "big.yaml", "file is 10.5 MB; workflow files are limited to 1 MB"),
        (lambda d: d / "bomb.yaml", "file expands to more than 100,000 values"),
        (lambda d: d / "missing.yaml", "file not found"),
        (lambda d: d / "latin1.yaml", "file is not UTF-8 text"),
    ],
)
def test_malformed_files_give_a_clear_error_quickly(tmp_path, make, message):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "big.yaml").write_text("# padding\n" * 1_050_000)
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (tmp_path / "latin1.yaml").write_bytes("flow: {name: caf\xe9}\n".encode("latin-1"))
    started = time.perf_counter()
    proc = cli("run", make(tmp_path))
    assert time.perf_counter() - started < 30
    assert proc.returncode == 2
    assert message in proc.stderr
    assert_no_traceback(proc)
    assert len(proc.stderr.strip().splitlines()) <= 3


def test_schema_command(tmp_path):
    proc = cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert {"schema_version", "flow", "state", "nodes", "edges"} <= set(schema["properties"])
    out = tmp_path / "s.json"
    assert cli("schema", "-o", out).returncode == 0
    assert json.loads(out.read_text()) == schema


def test_a_timed_out_node_does_not_keep_the_cli_alive(write_workflow, tmp_path, monkeypatch):
    """The CLI exits at the timeout, not when the tool still sleeping in its thread ends: the
    tool would create the marker file if the process were still alive when it finished."""
    text = MINIMAL.replace(
        "    outputs: [article]",
        "    outputs: [article]\n    tools: ['sample_tools:slow_marker']\n    timeout_seconds: 0.5",
    )
    marker = tmp_path / "tool-finished"
    monkeypatch.setenv("CA_TEST_SLOW_MARKER", str(marker))
    proc = cli("run", write_workflow(text), "-i", "topic=x")
    assert proc.returncode == 1
    assert "NodeTimeoutError: node 'write' did not finish within 0.5 s" in proc.stderr
    time.sleep(6)  # past the tool's 5 s: a process still alive would have made the file
    assert not marker.exists()


def test_error_lines_print_their_number_not_an_emoji(write_workflow):
    """Rich turns ':100:' into an emoji unless told not to: 'wf.yaml:100:' must stay as it is."""
    from typer.testing import CliRunner

    from configurable_agents.cli import app

    text = MINIMAL.replace("{topic}", "{topc}").replace(
        'prompt: "Write about',
        "prompt:\n      " + "\n      ".join(["x"] * 88) + '\n      "Write about',
    )
    path = write_workflow(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    line = next(ln for ln in result.output.splitlines() if "error:" in ln)
    assert line.startswith(f"{path}:100: error:") and "💯" not in result.output, result.output

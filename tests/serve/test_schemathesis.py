"""Schemathesis against the real server: ``configurable-agents serve`` (a ``provider: test``
workflow with every input type, an API key) on 127.0.0.1, every check (``--checks all``) in
every phase (examples, coverage, fuzzing, stateful: POST /runs, then GET /runs/{id} by the
OpenAPI links). Passes only when Schemathesis finds no failure.

CI runs a slice (``CA_SCHEMATHESIS_MAX_EXAMPLES``, default 40 cases per operation and phase,
fixed seed, about a minute); the nightly run (``make nightly``) sets 1000 and a random seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .procs import serve_process
from .test_api_contract import TYPED

pytest.importorskip("schemathesis")

KEY = "schemathesis-key"
MAX_EXAMPLES = os.environ.get("CA_SCHEMATHESIS_MAX_EXAMPLES", "40")
SEED = os.environ.get("CA_SCHEMATHESIS_SEED", "1")  # "random": a new seed each run


def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    workflow = tmp_path / "api_contract.yaml"
    workflow.write_text(TYPED, encoding="utf-8")
    database = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ("--max-concurrency", "4", "--grace-seconds", "1")
    with serve_process(workflow, database, tmp_path / "serve.log", args=args, api_key=KEY) as (
        base,
        proc,
    ):
        argv = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json"]
        argv += ["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"]
        argv += ["--header", f"Authorization: Bearer {KEY}", "--max-examples", MAX_EXAMPLES]
        # One worker: with threads, Python 3.11's ast.parse (Hypothesis describes its lambdas
        # with it) can fail with "AST constructor recursion depth mismatch", a CPython bug.
        argv += ["--workers", "1", "--generation-database", "none", "--no-color"]
        argv += ["--request-timeout", "30", "--suppress-health-check", "too_slow"]
        if SEED != "random":
            argv += ["--seed", SEED]
        result = subprocess.run(
            argv,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        output + "\n--- server log ---\n" + (tmp_path / "serve.log").read_text()
    )
    assert "No issues found" in output, output
    summary = [line.strip() for line in output.splitlines() if " generated, " in line]
    print(f"\nschemathesis: {summary[-1] if summary else '?'} (max examples {MAX_EXAMPLES})")
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output or f"✅ {phase}" in output, output
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log

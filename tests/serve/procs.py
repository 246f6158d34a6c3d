"""Helpers of the server tests: ``configurable-agents serve`` in a subprocess on a free
127.0.0.1 port (stopped by its PID), and polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from servers import free_port

SERVE = "from configurable_agents.cli import main; main()"


def wait_until(check: Callable[[], Any], timeout: float = 30, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(every)


@contextmanager
def serve_process(
    workflow: Path,
    database: str,
    log: Path,
    *,
    args: Sequence[str] = ("--max-concurrency", "1", "--grace-seconds", "1"),
    api_key: str | None = None,
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``configurable-agents serve`` in a subprocess; yields (base URL, process) once
    ``/health`` answers, and kills the process at the end if it is still up."""
    port = port or free_port()
    argv = [sys.executable, "-c", SERVE, "serve", str(workflow), "--port", str(port)]
    argv += ["--database-url", database, "--no-access-log", *args]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("CONFIGURABLE_AGENTS_API_KEY", None)
    if api_key:
        env["CONFIGURABLE_AGENTS_API_KEY"] = api_key
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=90, every=0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

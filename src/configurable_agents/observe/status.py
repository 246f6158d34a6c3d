"""What ``observability status`` reports about trace logging, kept between processes.

A small JSON file (``$CONFIGURABLE_AGENTS_STATE_DIR``, else ``$XDG_STATE_HOME`` or
``~/.local/state``, then ``configurable-agents/observability.json``) records, per tracking
URI, the last logging error and the last successful write. Writers take a file lock and
replace the file atomically, so concurrent processes never corrupt it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "CONFIGURABLE_AGENTS_STATE_DIR"
_SUCCESS_EVERY = 5.0  # seconds between success records from one process
_last_success: dict[str, float] = {}


def state_file() -> Path:
    base = os.environ.get(STATE_DIR_ENV)
    if base:
        return Path(base) / "observability.json"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "configurable-agents" / "observability.json"


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    import fcntl

    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_all()
        yield data
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def read_all() -> dict[str, Any]:
    try:
        data = json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(uri: str) -> dict[str, Any]:
    entry = read_all().get(uri)
    return entry if isinstance(entry, dict) else {}


def record_error(uri: str, message: str) -> None:
    with _locked() as data:
        entry = data.setdefault(uri, {})
        entry["last_error"] = message[:2000]
        entry["last_error_at"] = time.time()


def record_success(uri: str) -> None:
    now = time.time()
    if now - _last_success.get(uri, 0.0) < _SUCCESS_EVERY:
        return
    _last_success[uri] = now
    with _locked() as data:
        data.setdefault(uri, {})["last_success_at"] = now

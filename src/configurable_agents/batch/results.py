"""The results file: one JSON line per finished row, and the batch's identity next to it.

Each line is written with one ``write`` to a file opened ``O_APPEND``, so it is in the kernel
(and survives SIGKILL of the batch) as soon as the row finishes; ``fsync`` runs every
``FSYNC_ROWS`` lines or ``FSYNC_SECONDS`` (a machine crash loses at most that much, and those
rows run again on resume). Only a crash in the middle of a write can leave a torn last line:
``read_results`` drops it (the row runs again) and truncates the file to its last whole line.

``<results>.batch.json`` (written once, atomically, when the batch starts) holds the batch id,
the workflow and the data file's SHA-256: ``--resume`` refuses a results file from another
workflow or data file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import InputError, Issue
from .data import row_key

FSYNC_ROWS = 256
FSYNC_SECONDS = 1.0
META_VERSION = 1


def meta_path(results: Path) -> Path:
    return results.with_name(results.name + ".batch.json")


@dataclass
class BatchMeta:
    batch_id: str
    workflow: str  # flow name
    workflow_file: str
    workflow_sha256: str
    data_file: str
    data_sha256: str
    rows: int
    id_field: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    variant: str | None = None  # batch compare: "baseline" | "candidate"

    def write(self, results: Path) -> None:
        path = meta_path(results)
        tmp = path.with_name(path.name + ".tmp")
        data = {"version": META_VERSION, **self.__dict__}
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, results: Path) -> BatchMeta | None:
        path = meta_path(results)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("version", None)
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(
                Issue(f"cannot read the batch's identity: {exc}", file=str(path))
            ) from None

    def refuse_other(self, new: BatchMeta, results: Path) -> None:
        """Raise when ``new`` (this invocation) is not the batch ``results`` belongs to."""
        problems = []
        if (new.workflow, new.workflow_file) != (self.workflow, self.workflow_file):
            problems.append(
                f"it belongs to workflow '{self.workflow}' ({self.workflow_file}), not "
                f"'{new.workflow}' ({new.workflow_file})"
            )
        if new.data_sha256 != self.data_sha256:
            problems.append(
                f"it was written for another data file ({self.data_file}, SHA-256 "
                f"{self.data_sha256[:12]}…; {new.data_file} is {new.data_sha256[:12]}…)"
            )
        if (new.id_field, new.mapping) != (self.id_field, self.mapping):
            problems.append(
                f"it was written with --id-field {self.id_field} and --map {self.mapping}"
            )
        if problems:
            raise InputError(
                [
                    Issue(f"cannot resume: {p}", file=str(results), hint=_FRESH_HINT)
                    for p in problems
                ]
            )


_FRESH_HINT = "write the results somewhere else with -o, or remove the file to start over"


@dataclass
class Finished:
    """What the results file already holds: status per row key, and repairs made."""

    status: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    torn: bool = False


def read_results(path: Path, *, repair: bool = True) -> Finished:
    """The rows ``path`` records (the last line per row wins). A torn last line (no newline,
    or not JSON) is cut off when ``repair``; a bad line elsewhere is an error."""
    found = Finished()
    if not path.exists():
        return found
    data = path.read_bytes()
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
        found.torn = True
    lines = data[:end].split(b"\n")[:-1] if end else []
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw)
            key, status = row_key(record["row"]), record["status"]
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # a torn write that happened to end in a newline
                end -= len(raw) + 1
                found.torn = True
                break
            raise InputError(
                Issue(
                    "not a result line of configurable-agents batch",
                    file=str(path),
                    line=number,
                    hint=_FRESH_HINT,
                )
            ) from None
        found.status[key] = status
        found.lines += 1
    if found.torn and repair:
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return found


def drop_failed(path: Path) -> int:
    """Rewrite ``path`` without its failed rows (``--retry-failed``: they run again and each
    row stays in the file once); return how many were dropped."""
    keep: dict[str, bytes] = {}
    dropped = 0
    with path.open("rb") as f:
        for raw in f:
            record = json.loads(raw)
            keep[row_key(record["row"])] = raw
    out = []
    for raw in keep.values():
        if json.loads(raw)["status"] == "succeeded":
            out.append(raw)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.writelines(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class ResultsWriter:
    """Appends result lines (thread-safe), fsync'ing in batches; see the module doc."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._unsynced = 0
        self._synced_at = time.monotonic()

    def write(self, line: dict[str, Any]) -> None:
        data = (json.dumps(line, default=str, ensure_ascii=False) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._unsynced += 1
            now = time.monotonic()
            if self._unsynced >= FSYNC_ROWS or now - self._synced_at >= FSYNC_SECONDS:
                os.fsync(self._fd)
                self._unsynced, self._synced_at = 0, now

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

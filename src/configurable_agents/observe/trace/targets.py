"""Where traces go, with secrets kept out of every message, log line and file.

A sink's target as stored in the spool, printed in a warning or shown by ``observability
status`` is the URL with its password masked (``postgresql://ann:***@db/mlflow``) and OTLP
header values masked. The real URLs and headers live only in memory, in ``Credentials``:
the process that ran the workflow registers them, hands them to the detached drainer it
starts through that drainer's environment (never a file), and ``observability flush
--workflow F`` / ``--tracking-uri U`` supplies them again. A sink whose secret no process
has at hand waits in the spool (``observability status`` says so).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...urls import MASK as MASK  # re-exported: the trace pipeline's callers import them here
from ...urls import mask_url as mask_url
from ...urls import resolve_tracking_uri as resolve_tracking_uri
from ...urls import scrub as scrub
from ...urls import url_secrets as url_secrets
from .spool import SinkRef

CREDENTIALS_ENV = "CONFIGURABLE_AGENTS_DRAIN_CREDENTIALS"


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0].removeprefix("file:")
        return Path(path) if path and path != ":memory:" else None
    return None


def probe(uri: str, timeout: float = 2.0) -> str | None:
    """Why a tracking store cannot be written, or None when it looks fine: a SQLite file
    whose folder cannot be created or written, or a network store that refuses a TCP
    connection. Never raises."""
    import socket

    try:
        path = sqlite_path(uri)
        if path is not None:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                return f"{folder} is not a folder"
            if path.exists() and not os.access(path, os.W_OK):
                return f"{path} is read-only"
            if not path.exists() and not os.access(folder, os.W_OK):
                return f"{folder} is not writable"
            return None
        if uri.startswith("file:") or "://" not in uri:
            return None
        parts = urllib.parse.urlsplit(uri)
        defaults = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
        port = parts.port or defaults.get(parts.scheme.split("+", 1)[0])
        if not parts.hostname or port is None:
            return None
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class MlflowTarget:
    uri: str  # real, resolved
    experiment: str

    def sink(self) -> SinkRef:
        return _mlflow_sink(self.uri, self.experiment)


@functools.lru_cache(maxsize=256)
def _mlflow_sink(uri: str, experiment: str) -> SinkRef:
    return SinkRef("mlflow", json.dumps({"uri": mask_url(uri), "exp": experiment}))


@dataclass(frozen=True)
class OtlpTarget:
    endpoint: str
    service_name: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    sampling_rate: float | None  # None: the SDK's sampler from OTEL_TRACES_SAMPLER*

    def sink(self) -> SinkRef:
        target = {
            "endpoint": mask_url(self.endpoint),
            "service": self.service_name,
            "headers": {name: MASK for name, _ in self.headers},
            "timeout": self.timeout,
            "rate": self.sampling_rate,
        }
        return SinkRef("otlp", json.dumps(target, sort_keys=True))

    def has_secret(self) -> bool:
        return bool(self.headers) or mask_url(self.endpoint) != self.endpoint


@dataclass(frozen=True)
class PushTarget:
    gateway: str

    def sink(self) -> SinkRef:
        return SinkRef("metrics", json.dumps({"gateway": mask_url(self.gateway)}))


class Credentials:
    """Sink key → the real target, for sinks whose stored target has a secret masked."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(self, sink: SinkRef, secret: dict[str, Any]) -> None:
        with self._lock:
            self._by_key[sink.key] = secret

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._by_key.get(key)

    def secrets(self) -> list[str]:
        """Every secret value known here (for ``scrub``)."""
        out: list[str] = []
        with self._lock:
            for entry in self._by_key.values():
                if "uri" in entry:
                    out += url_secrets(entry["uri"])
                if "endpoint" in entry:
                    out += url_secrets(entry["endpoint"])
                if "gateway" in entry:
                    out += url_secrets(entry["gateway"])
                out += [v for _, v in entry.get("headers", []) if len(v) >= 3]
        return out

    def to_env(self) -> str:
        with self._lock:
            return json.dumps(self._by_key)

    def merge_env(self) -> None:
        """Take the credentials a parent process handed over (and remove them from the
        environment, so nothing this process starts inherits them)."""
        text = os.environ.pop(CREDENTIALS_ENV, None)
        if not text:
            return
        try:
            data = json.loads(text)
        except ValueError:
            return
        if isinstance(data, dict):
            with self._lock:
                self._by_key.update({k: v for k, v in data.items() if isinstance(v, dict)})


CREDENTIALS = Credentials()

"""``retention_days`` for traces *and* run records: what ``configurable-agents retention apply``
does, and what the server does at start and then daily (``RetentionThread``)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..observe.retention import DAY_MS, RetentionResult, apply_traces

if TYPE_CHECKING:
    from ..config.validate import LoadedWorkflow
    from .records import RunStore

log = logging.getLogger("configurable_agents.serve")
EVERY_SECONDS = 86_400.0


def apply_retention(
    loaded: LoadedWorkflow,
    *,
    dry_run: bool = False,
    database_url: str | None = None,
    store: RunStore | None = None,
    now_ms: int | None = None,
) -> RetentionResult:
    """Delete (or, ``dry_run``, count) the workflow's traces, artifacts, spool records and
    run records older than its ``retention_days``."""
    result = apply_traces(loaded, dry_run=dry_run, now_ms=now_ms)
    cutoff = dt.datetime.fromtimestamp(result.cutoff_ms / 1000, dt.UTC).replace(tzinfo=None)
    if store is None:
        from .tables import default_database_url

        url = database_url or default_database_url()
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return result
        from sqlalchemy import inspect

        from .records import RunStore

        store = RunStore(url, loaded.name)
        try:
            if "runs" in inspect(store.engine).get_table_names():
                result.run_records = store.delete_older(cutoff, dry_run=dry_run)
        finally:
            store.engine.dispose()
        return result
    result.run_records = store.delete_older(cutoff, dry_run=dry_run)
    return result


class RetentionThread:
    """The server's retention: once at start, then every day, in a daemon thread."""

    def __init__(self, loaded: LoadedWorkflow, store: RunStore) -> None:
        self.loaded = loaded
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="configurable-agents-retention", daemon=True
        )
        self.last: RetentionResult | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = apply_retention(self.loaded, store=self.store)
                log.info("retention applied: %s", self.last.to_dict())
            except Exception as exc:  # noqa: BLE001 - tried again tomorrow
                log.warning("retention could not be applied: %s: %s", type(exc).__name__, exc)
            self._stop.wait(EVERY_SECONDS)


__all__ = ["DAY_MS", "RetentionThread", "apply_retention"]

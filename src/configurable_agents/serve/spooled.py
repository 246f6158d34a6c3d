"""Run records whose write failed, kept in the workflow's durable spool until the database
takes them (the spool of the traces: ``observe.trace.spool``).

``RunStore`` retries a failed write in memory a few times, so a short outage costs nothing
and the server still answers ``GET /runs/{id}`` from memory meanwhile. A *finished* record it
would otherwise give up (its retries ran out, too many records wait, or the server is
stopping) is appended to the spool as a ``records`` delivery instead, and the run leaves the
server's memory. From there it is written:

- by the store's writer thread, which drains it every ``DRAIN_EVERY`` seconds while any is
  pending (with the spool's backoff when the database is still away);
- when a store next opens on the same database and workflow (a restarted server, another
  replica on this machine);
- by ``configurable-agents observability flush``.

A record written twice is the same upsert twice (finished records never change). In-flight
records are not spooled: a newer snapshot supersedes them, and if the server dies first
another replica's lease reaper (or the next start) marks the run failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..observe.trace.drain import Drainer, WriteResult
from ..observe.trace.spool import FORMAT, SinkRef, Spool, SpoolRecord, open_spool
from ..observe.trace.targets import CREDENTIALS, mask_url, scrub

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from .records import RunStore

__all__ = [
    "DRAIN_EVERY",
    "KIND",
    "RecordSink",
    "SpooledRecords",
    "open_record_sink",
    "records_spool_path",
    "sink_ref",
]

log = logging.getLogger("configurable_agents.serve")

KIND = "records"
DRAIN_EVERY = 1.0  # seconds between drains of the store's own spooled records


def sink_ref(url: str, workflow: str) -> SinkRef:
    """The spool's destination for ``workflow``'s records in the database ``url`` (no
    secret: a password in the URL is masked, and handed to drainers in memory)."""
    target = {"uri": mask_url(url), "workflow": workflow}
    ref = SinkRef(KIND, json.dumps(target, sort_keys=True))
    if target["uri"] != url:
        CREDENTIALS.register(ref, {"uri": url, "workflow": workflow})
    return ref


class RecordSink:
    """Writes spooled run records through a ``RunStore`` (a drainer's sink)."""

    def __init__(self, store: RunStore, owned: bool = False) -> None:
        self.store = store
        self.owned = owned  # opened for this sink: disposed with it

    def write(self, batch: Sequence[tuple[int, SpoolRecord]]) -> WriteResult:
        from .records import TRANSIENT_ERRORS

        result = WriteResult()
        rows = [record.data["row"] for _, record in batch]
        error = self.store.try_write(rows, redact=False)  # redacted before it was spooled
        if error is None:
            result.delivered = [record_id for record_id, _ in batch]
            return result
        if isinstance(error, TRANSIENT_ERRORS):
            result.failed = {record_id: _describe(error) for record_id, _ in batch}
            return result
        for (record_id, _), row in zip(batch, rows, strict=True):  # find the row it refuses
            single = self.store.try_write([row], redact=False) if len(batch) > 1 else error
            if single is None:
                result.delivered.append(record_id)
            elif isinstance(single, TRANSIENT_ERRORS):
                result.failed[record_id] = _describe(single)
            else:
                result.rejected[record_id] = _describe(single)
        return result

    def close(self) -> None:
        if self.owned:
            self.store.engine.dispose()


def open_record_sink(target: dict[str, Any], spool_path: Path | None) -> RecordSink:
    """A sink for spooled records of a server that is not this process (``observability
    flush``): a store on the record's database, without writer or heartbeat."""
    from .records import RunStore

    return RecordSink(RunStore(target["uri"], target["workflow"]), owned=True)


class SpooledRecords:
    """One store's records in the spool: append the ones it gives up, drain them back."""

    def __init__(self, store: RunStore, path: Path) -> None:
        self.store = store
        self.spool: Spool = open_spool(path)
        self.ref = sink_ref(store.url, store.workflow)
        self.drainer = Drainer(
            self.spool,
            factories={KIND: lambda target, _path: RecordSink(store)},
            kinds=frozenset({KIND}),
        )
        self.next_drain: float | None = None  # monotonic time of the next drain, or none due
        self.warned = False

    def append(self, row: dict[str, Any], error: BaseException) -> None:
        """Keep ``row`` (already redacted) in the spool; raises what the spool raises."""
        self.spool.append(SpoolRecord(FORMAT, "record", {"row": row}), [self.ref])
        if not self.warned:
            self.warned = True
            log.warning(
                "run record(s) of %r kept in the spool %s after failed writes (%s); they are "
                "written when the database is back (by this server, the next one to start, or "
                "configurable-agents observability flush)",
                self.store.workflow,
                self.spool.path,
                _describe(error),
            )
        if self.next_drain is None:
            self.next_drain = time.monotonic() + DRAIN_EVERY

    def pending(self) -> int:
        sink = self.spool.sink_id(self.ref)
        return sum(s.pending for s in self.spool.sinks() if s.id == sink)

    def drain(self, timeout: float | None = None) -> int:
        """Write what is due (everything, within ``timeout`` s, when given); return what is
        still pending. Never raises: a failure stays in the spool with its backoff."""
        try:
            if timeout is not None:
                left = self.drainer.drain(timeout, stall=timeout)
            else:
                self.drainer.step()
                self.drainer.release_all()
                left = self.pending()
        except Exception as exc:  # noqa: BLE001 - retried at the next drain
            log.debug("draining spooled run records failed: %s", exc)
            left = 1
        if left:
            self.next_drain = time.monotonic() + DRAIN_EVERY
        else:
            self.next_drain = None
            if self.warned:
                self.warned = False
                log.warning("spooled run records of %r are written", self.store.workflow)
        return left


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return scrub(f"{type(error).__name__}: {lines[0] if lines else ''}", CREDENTIALS.secrets())


def records_spool_path(compiled: CompiledWorkflow) -> Path:
    """Where the server keeps ``compiled``'s records whose write failed: the workflow's trace
    spool (``observability.spool.path``, relative to the workflow file, or the default)."""
    from ..observe.trace.spool import workflow_spool_path

    workflow = compiled.workflow
    base = Path(workflow.file).parent if workflow.file else None
    return workflow_spool_path(workflow.spec.config.observability.spool.path, base)

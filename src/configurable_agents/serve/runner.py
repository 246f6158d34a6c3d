"""Runs on the server: a bounded number at a time, each recorded from queued to finished.

Every accepted run is an asyncio task that waits for a slot (an ``asyncio.Semaphore`` of
``max_concurrency``), then calls the blocking ``run_workflow`` on a daemon worker thread (a run
stuck in a model call never keeps the process from exiting). ``POST /runs`` waits for that task
or returns at once; either way the run goes on if the client goes away.

Records live in memory while the run is in flight (``GET /runs/{id}`` reads them there). The
queued and running states are written deferred (a run still in flight after
``RunStore.defer_seconds`` is in the database as such; a shorter one is written once), except
that ``wait=false`` waits until the queued record is stored before handing out its id. The
finished record is written by the run's worker thread, which waits for the commit: a run is in
the database before it is reported, and only then leaves memory. A write that fails is retried
by the store (``RunStore._retry_later``); the record stays in memory until it is written or
given up.

Shutdown: ``begin_shutdown`` (on SIGTERM, or when the app's lifespan ends) refuses new runs and
fails the queued ones at once; ``shutdown`` then gives running ones until the grace period ends,
fails the rest, writes every record, and flushes traces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..compile.plan import CompiledWorkflow
from ..run.executor import _DaemonWorkers, run_workflow
from .records import STOPPED_REASON, Record, RunStore, stopped_error, utcnow

log = logging.getLogger("configurable_agents.serve")

DEFAULT_CONCURRENCY = 16
LOCAL_CONCURRENCY = 1
NOT_STARTED_REASON = "server stopped before the run started"
STORE_TIMEOUT = 60.0  # how long a worker waits for its finished record to be written
ACCEPT_TIMEOUT = 10.0  # how long POST /runs?wait=false waits for the queued record


class ServerStopping(Exception):
    """The server is shutting down and takes no new runs."""


class ServerBusy(Exception):
    """Too many runs are queued already."""


def default_concurrency(compiled: CompiledWorkflow) -> int:
    """1 when any node runs on the in-process local model, else ``DEFAULT_CONCURRENCY``."""
    if any(node.provider.name == "local" for node in compiled.nodes.values()):
        return LOCAL_CONCURRENCY
    return DEFAULT_CONCURRENCY


class Runner:
    def __init__(
        self,
        compiled: CompiledWorkflow,
        store: RunStore,
        *,
        max_concurrency: int,
        grace_seconds: float,
        max_queue: int,
        trace: bool | None = None,
    ) -> None:
        self.compiled = compiled
        self.store = store
        mlflow = compiled.workflow.spec.config.observability.mlflow
        if mlflow.redact_pii:  # run records are stored redacted (the answers are not)
            from ..observe.redact import redact_record

            config = mlflow.redact
            store.redact = lambda record: redact_record(record, config)
        self.max_concurrency = max_concurrency
        self.grace_seconds = grace_seconds
        self.max_queue = max_queue
        self.trace = trace
        self.started = time.monotonic()
        self.workflow = compiled.name
        self.version = compiled.workflow.spec.flow.version
        self.queued = 0
        self.running = 0
        self.stopping = False
        self._deadline: float | None = None
        self._live: dict[str, Record] = {}
        self._contexts: dict[str, dict[str, str]] = {}  # W3C trace headers, per run id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._workers = _DaemonWorkers()
        self._finishing = threading.Lock()  # a run's end: stored by its worker, or by _stop
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await run_in_threadpool(self.store.open)

    def begin_shutdown(self) -> None:
        """Take no new runs and fail the queued ones (call on the event loop; idempotent)."""
        if self.stopping:
            return
        self.stopping = True
        self._deadline = time.monotonic() + self.grace_seconds
        for run_id, record in list(self._live.items()):
            if record["status"] == "queued":
                self._stop(record, NOT_STARTED_REASON)
                task = self._tasks.get(run_id)
                if task is not None:
                    task.cancel()

    async def shutdown(self, flush_timeout: float | None = None) -> None:
        """Finish or fail every run, write every record, flush traces, close the store."""
        self.begin_shutdown()
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            left = max(0.0, (self._deadline or 0.0) - time.monotonic())
            log.info("waiting up to %.0f s for %d run(s) to finish", left, len(pending))
            _, still = await asyncio.wait(pending, timeout=left)
            reason = (
                f"{STOPPED_REASON} (the shutdown grace period of {self.grace_seconds:g} s ran out)"
            )
            overdue = [r for r in self._live.values() if r["status"] in ("queued", "running")]
            for record in overdue:
                self._stop(record, reason)
            for task in still:
                task.cancel()
            if overdue:
                log.warning("%d run(s) did not finish in time and were marked failed", len(overdue))
            if still:
                await asyncio.wait(still)
        if not await run_in_threadpool(self.store.close):
            log.warning("some run records were not written before shutdown")
        await run_in_threadpool(_flush_traces, flush_timeout)

    # -- runs ------------------------------------------------------------------------------

    async def submit(
        self,
        inputs: dict[str, Any],
        tags: dict[str, str],
        *,
        wait: bool,
        trace_context: dict[str, str] | None = None,
    ) -> Record:
        """Accept a run (inputs already checked): record it as queued and start its task.
        With ``wait`` false, return once the queued record is stored (it is then safe to hand
        out its id); else the run is stored when it finishes (or, if it takes longer, within
        ``RunStore.defer_seconds``). ``trace_context`` (W3C ``traceparent``/``tracestate``
        headers) makes the run's OpenTelemetry spans continue the caller's trace."""
        if self.stopping:
            raise ServerStopping
        if self.queued >= self.max_queue:
            raise ServerBusy
        record: Record = {
            "id": uuid.uuid4().hex,
            "workflow": self.workflow,
            "workflow_version": self.version,
            "status": "queued",
            "inputs": inputs,
            "tags": tags,
            "created_at": utcnow(),
        }
        run_id = record["id"]
        self._live[run_id] = record
        if trace_context:
            self._contexts[run_id] = trace_context
        self.queued += 1
        stored = None if wait else self._commit_future(record)
        if wait:
            self.store.save(record, defer=True)
        self._tasks[run_id] = asyncio.get_running_loop().create_task(
            self._run(record), name=f"run-{run_id}"
        )
        if stored is not None:
            await self._settle(record, stored)
        return record

    async def wait(self, record: Record) -> Record:
        """Wait until the run is finished and stored (the run goes on if this is cancelled)."""
        task = self._tasks.get(record["id"])
        if task is not None:
            await asyncio.shield(task)
        return record

    def live(self, run_id: str) -> Record | None:
        return self._live.get(run_id)

    async def _run(self, record: Record) -> None:
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:  # failed by begin_shutdown while queued
            return
        try:
            if record["status"] != "queued":
                return
            self.queued -= 1
            record["status"] = "running"
            record["started_at"] = utcnow()
            self.store.save(record, defer=True)
            self.running += 1
            try:
                outcome, stored = await asyncio.wrap_future(
                    self._workers.submit(self._execute, record)
                )
            except asyncio.CancelledError:  # failed by shutdown after the grace period
                return
            finally:
                self.running -= 1
        finally:
            self._slots.release()
        if outcome is not None:
            record.update(outcome)
            if stored:
                self._forget(record)

    def _execute(self, record: Record) -> tuple[Record | None, bool]:
        """On a worker thread: run the workflow, store the finished record, and return its
        finished fields (None if shutdown failed the run meanwhile) and whether it may leave
        memory now (stored, or given up by the store).

        Storing here, not back on the event loop, spares the loop one wake-up per run. A
        record the store is still retrying after ``STORE_TIMEOUT`` stays in memory (so
        ``GET /runs/{id}`` still finds it) until the store has written it or given it up."""
        context = self._contexts.pop(record["id"], None)
        outcome = self._outcome(record["inputs"], record["tags"], context)
        committed = threading.Event()
        errors: list[BaseException | None] = []
        late = threading.Event()  # set once this worker stopped waiting for the commit

        def on_commit(error: BaseException | None) -> None:
            errors.append(error)
            committed.set()
            if late.is_set():
                self._forget_threadsafe(record)

        with self._finishing:
            if record["status"] != "running":
                return None, False
            record["_finished"] = True  # _stop leaves it alone from now on
            result = outcome.pop("_result", None)
            self.store.save({**record, **outcome}, on_commit)
        if result is not None and any(not j.spec.in_run for j in self.compiled.judges):
            from ..observe.judging import when_judged

            def judged(done: Any) -> None:  # the warn judges' verdicts, off the run's path
                verdicts = [j.to_dict() for j in done.judges or []]
                self.store.save({**record, **outcome, "judges": verdicts or None})

            when_judged(result, judged)
        in_time = committed.wait(STORE_TIMEOUT)
        late.set()
        if not in_time and not committed.is_set():
            log.warning(
                "run %s is not stored yet (not within %g s); it stays in memory until it is",
                record["id"],
                STORE_TIMEOUT,
            )
            return outcome, False
        if errors[0] is not None:
            log.warning("run %s was not stored: %s", record["id"], errors[0])
        return outcome, True

    def _forget_threadsafe(self, record: Record) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: memory goes with it
                loop.call_soon_threadsafe(self._forget, record)

    def _outcome(
        self, inputs: dict[str, Any], tags: dict[str, str], context: dict[str, str] | None
    ) -> Record:
        """Run the workflow and return the record's finished fields."""
        try:
            result = run_workflow(
                self.compiled,
                inputs,
                trace=self.trace,
                tags=tags or None,
                trace_context=context,
            )
            from ..run.cost import summarize_cost

            cost = summarize_cost(result)
        except Exception as exc:  # recorded as the run's error
            log.exception("run failed inside the server")
            return {
                "status": "failed",
                "error": {"type": type(exc).__name__, "message": str(exc), "node": None},
                "finished_at": utcnow(),
            }
        return {
            "status": result.status,
            "outputs": result.outputs,
            "error": asdict(result.error) if result.error else None,
            "run_id": result.run_id,
            "trace_id": result.trace_id,
            "cost_usd": cost.total_usd,
            "usage": result.usage.to_dict(),
            "duration_ms": round(result.duration_ms, 3),
            "nodes": [node.to_dict() for node in result.nodes],
            "judges": [j.to_dict() for j in result.judges] if result.judges else None,
            "finished_at": utcnow(),
            "_result": result,  # not a column: for the warn judges' verdicts (_execute)
        }

    def _stop(self, record: Record, reason: str) -> None:
        with self._finishing:
            if record.get("_finished"):  # its worker has stored it as it ended
                return
            if record["status"] == "queued":
                self.queued -= 1
            record["status"] = "failed"
            record["error"] = stopped_error(reason)
            record["finished_at"] = utcnow()
            stored = self._commit_future(record)
        self._track(record, stored)

    @staticmethod
    async def _settle(record: Record, stored: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(stored), ACCEPT_TIMEOUT)
        except TimeoutError:  # the store keeps retrying; the run goes on meanwhile
            log.warning("run %s is not stored yet; answering without waiting", record["id"])
        except Exception as exc:  # noqa: BLE001 - the run goes on; its result is still returned
            log.warning("run %s was not stored: %s", record["id"], exc)

    def _commit_future(self, record: Record) -> asyncio.Future[None]:
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        def committed(error: BaseException | None) -> None:  # on the writer thread
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(resolve, error)

        self.store.save(record, committed)
        return future

    def _track(self, record: Record, future: asyncio.Future[None]) -> None:
        """Drop a finished record from memory once it is stored, or given up by the store
        after its retries (memory stays bounded; the store logged the loss)."""

        def forget(done: asyncio.Future[None]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: the store has logged it
                self._forget(record)

        future.add_done_callback(forget)

    def _forget(self, record: Record) -> None:
        run_id = record["id"]
        if self._live.get(run_id) is record:
            del self._live[run_id]
        self._tasks.pop(run_id, None)

    # -- state -----------------------------------------------------------------------------

    def uptime(self) -> float:
        return time.monotonic() - self.started


def _flush_traces(timeout: float | None) -> None:
    from ..observe import flush

    if not flush(timeout):
        log.info("some traces are still in the spool; a drainer writes them after we exit")

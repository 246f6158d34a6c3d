"""The local engines: a bounded pool of threads in this process, or of processes for the
``local`` provider (llama.cpp holds a lock per loaded model: threads would take turns on one
model; each process loads its own, once).

An engine pulls rows from the iterator only when it has a free slot (``concurrency`` rows in
flight at most, so memory does not grow with the data), hands each finished row's result line
to ``done`` (from a worker thread, in finishing order), and stops pulling once ``stop`` is set;
rows in flight then finish.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from ..providers.local import set_default_threads, usable_cores
from .worker import RowJob, WorkflowSource, compiled_for, run_row

Done = Callable[[dict[str, Any]], None]


class Engine(Protocol):
    name: str

    def run(self, jobs: Iterable[RowJob], done: Done, stop: threading.Event) -> None: ...


class EngineError(Exception):
    """The engine cannot go on (a worker process died); finished rows are in the results."""


class ThreadEngine:
    """Rows as tasks of a thread pool in this process (any provider but ``local``)."""

    name = "local"

    def __init__(self, source: WorkflowSource, concurrency: int) -> None:
        self.source = source
        self.concurrency = concurrency

    def run(self, jobs: Iterable[RowJob], done: Done, stop: threading.Event) -> None:
        compiled = compiled_for(self.source)
        slots = threading.BoundedSemaphore(self.concurrency)

        def task(job: RowJob) -> None:
            try:
                done(run_row(compiled, job))
            finally:
                slots.release()

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="ca-batch") as pool:
            _feed(jobs, slots, stop, lambda job: pool.submit(task, job))


def _feed(
    jobs: Iterable[RowJob],
    slots: threading.BoundedSemaphore,
    stop: threading.Event,
    submit: Callable[[RowJob], Future[Any]],
) -> None:
    for job in jobs:
        while not slots.acquire(timeout=0.5):
            if stop.is_set():
                return
        if stop.is_set():
            slots.release()
            return
        submit(job)


# --------------------------------------------------------------------------- processes

_process_compiled: Any = None


def _exit_with_parent() -> None:
    """End this worker when the batch process that spawned it dies (SIGKILL, a crash).

    Otherwise it runs on as an orphan: it finishes the rows it was handed, whose result lines
    nobody writes (``--resume`` runs them again), and then its model threads keep two cores
    busy for nothing. The parent's sentinel becomes ready when the parent exits."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)  # what the worker spooled is on disk; the next process drains it

    threading.Thread(target=watch, name="configurable-agents-parent-watch", daemon=True).start()


def _init_process(source: WorkflowSource, processes: int) -> None:
    global _process_compiled
    _exit_with_parent()
    import configurable_agents  # noqa: F401 - installs the observer in this process

    set_default_threads(usable_cores() // processes)
    _process_compiled = compiled_for(source)


def _run_in_process(job: RowJob) -> dict[str, Any]:
    return run_row(_process_compiled, job)


class ProcessEngine:
    """Rows in a pool of ``concurrency`` spawned processes, each with the workflow (and its
    local model) loaded once, with its share of the cores for llama.cpp's threads. Each
    process spools its own traces (the spool is a file every process appends to) and flushes
    them when it exits; it exits at once when the batch process dies."""

    name = "local"

    def __init__(self, source: WorkflowSource, concurrency: int) -> None:
        self.source = source
        self.concurrency = concurrency

    def run(self, jobs: Iterable[RowJob], done: Done, stop: threading.Event) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        slots = threading.BoundedSemaphore(self.concurrency)
        broken: list[BaseException] = []

        def finished(future: Future[dict[str, Any]]) -> None:
            try:
                done(future.result())
            except BrokenProcessPool as exc:
                broken.append(exc)
                stop.set()
            finally:
                slots.release()

        def submit(job: RowJob) -> Future[Any]:
            future = pool.submit(_run_in_process, job)
            future.add_done_callback(finished)
            return future

        pool = ProcessPoolExecutor(
            self.concurrency,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(self.source, self.concurrency),
        )
        try:
            _feed(jobs, slots, stop, submit)
        finally:
            pool.shutdown(wait=True)
        if broken:
            raise EngineError(
                "a worker process died; the rows it was running are not in the results "
                "(run again with --resume to finish them)"
            )


def local_engine(source: WorkflowSource, concurrency: int) -> Engine:
    """Threads, or processes when a node runs on the ``local`` provider."""
    compiled = compiled_for(source)
    if any(node.provider.name == "local" for node in compiled.nodes.values()):
        return ProcessEngine(source, concurrency)
    return ThreadEngine(source, concurrency)

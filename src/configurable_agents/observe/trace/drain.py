"""Drainers: take spooled runs out in batches, write them to their sinks, delete them.

A drainer holds a lock file per sink it drains (``<spool>.sink-<id>.lock``), so one drainer
at a time writes to a sink, in order; several sinks drain in parallel. A delivery is deleted
only after its sink has confirmed the whole batch; a batch that fails is retried with
exponential backoff (at most ``MAX_BACKOFF`` seconds apart); a record that can never be
written (it cannot be read back, or the sink rejects it ``MAX_ATTEMPTS`` times) is set aside
and counted as dropped. Sinks write idempotently (a trace already in the store is skipped),
so a batch retried after a crash never duplicates a trace.

Who drains: every process that spools a run makes sure a drainer serves its sinks; when none
does, it starts a detached one (``python -m configurable_agents.observe.trace.drain``, in its
own session, outliving the CLI) that exits once nothing is due for ``IDLE_EXIT`` seconds
(one started less than ``RESTARTED`` s after the last one exited keeps its sink locks and
stays ``LINGER`` s: a trickle of runs then pays for one drainer, not one per run), or
when its sinks have failed for ``GIVE_UP`` seconds (the next process or ``observability
flush`` takes over). ``observability flush`` drains in-process, ignoring backoff.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol

from .spool import SinkState, Spool, SpoolRecord, open_spool
from .targets import CREDENTIALS, CREDENTIALS_ENV, MASK, Credentials, scrub

log = logging.getLogger("configurable_agents.observe")

BATCH = 500
MAX_BACKOFF = 120.0
MAX_ATTEMPTS = 8  # for a record the sink rejects (not for a sink that is down)
IDLE_EXIT = 3.0
# A detached drainer started within RESTARTED seconds of the last one's exit on the same spool
# keeps its sink locks and waits LINGER seconds for work once idle: runs are coming in a
# trickle (a batch on a slow model, a quiet server), and each new drainer would import MLflow
# again (about 4 s of CPU here); holding the locks tells the next run one is serving.
RESTARTED = 60.0
LINGER = 30.0
EXITED_AT = "drainer_exited_at"  # spool counter: when a detached drainer last exited (epoch s)
GIVE_UP = 300.0
WARN_EVERY = 60.0
# A detached drainer under a steady stream of runs (a busy server) would otherwise write each
# trace as it arrives, one transaction each, and use several ms of CPU per trace that the
# runs need. After a batch that was not full it rests so that writing takes at most DUTY of
# its time (at most MAX_REST seconds): the next batch holds what arrived meanwhile, so the
# cost per trace falls as the load rises, and a trickle of runs still lands within ~0.1 s.
DUTY = 0.05
MAX_REST = 1.0


@dataclass
class WriteResult:
    """What a sink did with a batch: every record id lands in exactly one field."""

    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # retry later (the sink is down)
    rejected: dict[int, str] = field(default_factory=dict)  # this record is the problem


class Sink(Protocol):
    def write(self, batch: Sequence[tuple[int, SpoolRecord]]) -> WriteResult: ...

    def close(self) -> None: ...


SinkFactory = Callable[[dict[str, Any], "Path | None"], Sink]
TRACE_KINDS = frozenset({"mlflow", "otlp", "metrics"})  # what detached drainers and flush serve


def open_sink(kind: str, target: dict[str, Any], spool_path: Path | None = None) -> Sink:
    """The sink of ``kind`` for ``target``; ``spool_path``: the spool it drains (the metrics
    sink keeps its cumulative totals there)."""
    if kind == "mlflow":
        from .mlflow_sink import MlflowSink

        return MlflowSink(target["uri"], target["exp"])
    if kind == "otlp":
        from .otlp import OtlpSink

        return OtlpSink(target)
    if kind == "metrics":
        from ..metrics.push import PushSink

        return PushSink(target["gateway"], state_path=spool_path)
    raise ValueError(f"unknown sink kind {kind!r}")


class _SinkLock:
    def __init__(self, spool: Spool, sink: int) -> None:
        self.path = Path(f"{spool.path}.sink-{sink}.lock")
        self.handle: IO[str] | None = None

    def acquire(self) -> bool:
        import fcntl

        handle = open(self.path, "a")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def sink_is_free(spool: Spool, sink: int) -> bool:
    """No drainer serves ``sink`` right now."""
    lock = _SinkLock(spool, sink)
    if lock.acquire():
        lock.release()
        return True
    return False


class Drainer:
    """Drains the sinks of one spool that it has credentials for: those of the trace kinds
    (``TRACE_KINDS``) and of the kinds the caller brings ``factories`` for (the server's run
    records: ``serve.spooled``), or only those of ``kinds``."""

    def __init__(
        self,
        spool: Spool,
        credentials: Credentials = CREDENTIALS,
        *,
        factories: dict[str, SinkFactory] | None = None,
        kinds: frozenset[str] | None = None,
    ) -> None:
        self.spool = spool
        self.credentials = credentials
        self.factories = dict(factories or {})
        self.kinds = kinds if kinds is not None else TRACE_KINDS | self.factories.keys()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._locks: dict[int, _SinkLock] = {}
        self._sinks: dict[int, Sink] = {}
        self._warned: dict[int, float] = {}
        self.warn = False  # log a warning (once per sink per minute) when a sink fails
        self.hold = False  # keep sink locks while idle (a lingering detached drainer)
        self.last_success = time.monotonic()
        self.busy = 0.0  # seconds spent writing batches (not opening sinks), in all

    def target(self, state: SinkState) -> dict[str, Any] | None:
        """The sink's real target, or None when it needs a secret nobody gave us (or is of a
        kind this drainer does not serve)."""
        if state.kind not in self.kinds:
            return None
        real = self.credentials.get(state.key)
        if real is not None:
            return real
        target: dict[str, Any] = json.loads(state.target)
        return None if MASK in state.target else target

    def step(self, *, ignore_backoff: bool = False) -> int:
        """One batch per sink that has due work; return the deliveries handled."""
        handled = 0
        for state in self.spool.sinks():
            due = state.pending if ignore_backoff else state.due
            if not due:
                if not self.hold:
                    self._release(state.id)
                continue
            if state.id not in self._locks:
                if self.target(state) is None:
                    continue
                lock = _SinkLock(self.spool, state.id)
                if not lock.acquire():
                    continue
                self._locks[state.id] = lock
            handled += self._drain_batch(state, ignore_backoff)
        return handled

    def _drain_batch(self, state: SinkState, ignore_backoff: bool) -> int:
        entries = self.spool.claim(state.id, self.owner, BATCH, ignore_backoff=ignore_backoff)
        if not entries:
            return 0
        batch: list[tuple[int, SpoolRecord]] = []
        unreadable: list[int] = []
        for entry in entries:
            try:
                batch.append((entry.record_id, entry.load()))
            except Exception:  # noqa: BLE001 - a record from another version: set aside
                unreadable.append(entry.record_id)
        if unreadable:
            self.spool.set_aside(state.id, unreadable, "unreadable spool record(s) set aside")
        if not batch:
            return len(entries)
        try:
            sink = self._sinks.get(state.id)
            if sink is None:
                target = self.target(state)
                assert target is not None
                factory = self.factories.get(state.kind, partial(open_sink, state.kind))
                sink = factory(target, self.spool.path)
                self._sinks[state.id] = sink
            began = time.monotonic()
            result = sink.write(batch)
        except Exception as exc:  # noqa: BLE001 - the sink is down: retry the batch later
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            result = WriteResult(failed={record_id: message for record_id, _ in batch})
            self._drop_sink(state.id)
        else:
            self.busy += time.monotonic() - began
        self.spool.delivered(state.id, result.delivered)
        if result.delivered:
            self.last_success = time.monotonic()
        attempts = {e.record_id: e.attempts for e in entries}
        if result.failed:
            first = self._scrub(next(iter(result.failed.values())))
            tries = max(attempts[r] for r in result.failed)
            self.spool.failed(state.id, list(result.failed), first, _backoff(tries))
            self._warn(state, first, len(result.failed))
        for record_id, error in result.rejected.items():
            if attempts[record_id] + 1 >= MAX_ATTEMPTS:
                self.spool.set_aside(state.id, [record_id], self._scrub(error))
            else:
                self.spool.failed(state.id, [record_id], self._scrub(error), _backoff(0))
        return len(entries)

    def _scrub(self, text: str) -> str:
        return scrub(text, self.credentials.secrets())

    def _warn(self, state: SinkState, error: str, count: int) -> None:
        if not self.warn:
            return
        now = time.monotonic()
        if now - self._warned.get(state.id, -WARN_EVERY) < WARN_EVERY:
            return
        self._warned[state.id] = now
        log.warning(
            "could not write %d trace(s) to %s (%s); they stay in the spool %s and are "
            "retried. See: configurable-agents observability status",
            count,
            describe(state),
            error.splitlines()[0] if error else "error",
            self.spool.path,
        )

    def _drop_sink(self, sink: int) -> None:
        found = self._sinks.pop(sink, None)
        if found is not None:
            with contextlib.suppress(Exception):
                found.close()

    def _release(self, sink: int) -> None:
        lock = self._locks.pop(sink, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for sink in list(self._locks):
            self._release(sink)

    def close(self) -> None:
        self.release_all()
        for sink in list(self._sinks):
            self._drop_sink(sink)

    def servable(self) -> int:
        """Due deliveries this drainer could serve (sink free or already ours)."""
        total = 0
        for state in self.spool.sinks():
            ours = state.id in self._locks or sink_is_free(self.spool, state.id)
            if state.due and self.target(state) is not None and ours:
                total += state.due
        return total

    def drain(self, timeout: float, *, ignore_backoff: bool = True, stall: float = 10.0) -> int:
        """Drain until nothing is pending that we can serve, ``timeout`` seconds passed, or
        a sink kept failing for ``stall`` seconds with nothing written; return what is still
        pending (for sinks we can serve)."""
        deadline = time.monotonic() + timeout
        progress = time.monotonic()
        began = time.time()
        try:
            while time.monotonic() < deadline:
                written = self.spool_written()
                handled = self.step(ignore_backoff=ignore_backoff)
                ignore_backoff = False  # retry at once only once: then back off as usual
                if self.spool_written() > written:
                    progress = time.monotonic()
                if handled:
                    continue
                remaining = self._pending_servable()
                stalled = time.monotonic() - progress > stall and self._failing(began)
                if not remaining or stalled:
                    return remaining
                # Another drainer holds a sink, or a batch is backing off: wait a little.
                time.sleep(0.2)
            return self._pending_servable()
        finally:
            self.release_all()

    def _failing(self, since: float) -> bool:
        """A sink with work failed since ``since`` and has not succeeded after (a sink that
        another, slower drainer serves is not failing: we wait for it)."""
        return any(
            s.pending
            and (s.last_error_at or 0) >= since
            and (s.last_success_at or 0) < (s.last_error_at or 0)
            for s in self.spool.sinks()
        )

    def spool_written(self) -> int:
        return sum(s.written for s in self.spool.sinks())

    def _pending_servable(self) -> int:
        return sum(s.pending for s in self.spool.sinks() if self.target(s) is not None)

    def run_detached(self, idle_exit: float = IDLE_EXIT, give_up: float = GIVE_UP) -> None:
        idle_since = time.monotonic()
        try:
            while True:
                busy = self.busy
                handled = self.step()
                if handled:
                    idle_since = time.monotonic()
                    if time.monotonic() - self.last_success > give_up:
                        return
                    if handled < BATCH:  # rest: see DUTY
                        time.sleep(min(MAX_REST, (self.busy - busy) * (1 - DUTY) / DUTY))
                    continue
                if not self.hold:
                    self.release_all()
                if self.servable():
                    continue
                now = time.monotonic()
                if now - idle_since > idle_exit and not self._waiting_for_backoff():
                    return
                if now - self.last_success > give_up:
                    return
                time.sleep(0.05 if now - idle_since < 1 else 0.25)
        finally:
            self.close()
            with contextlib.suppress(Exception):  # a hint for the next drainer, nothing more
                self.spool.set_counter(EXITED_AT, int(time.time()))

    def _waiting_for_backoff(self) -> bool:
        return any(s.pending > s.due and self.target(s) is not None for s in self.spool.sinks())


def tune_gc() -> None:
    """For a process that drains: a drainer makes many short-lived objects per trace while it
    holds MLflow's large heap, and the default threshold (700 allocations) makes the young
    generation's collections, and the full ones after them, take a third of its time. Collect
    the young generation every 50,000 allocations instead (about 1.7x the traces per second)."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def _backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF, 0.5 * 2.0**attempts) * random.uniform(0.8, 1.2))


def describe(state: SinkState) -> str:
    """A sink for people (secrets masked, as stored)."""
    try:
        target = json.loads(state.target)
    except ValueError:
        return state.key
    if state.kind == "mlflow":
        return f"MLflow at {target['uri']} (experiment {target['exp']!r})"
    if state.kind == "otlp":
        return f"OTLP endpoint {target['endpoint']}"
    if state.kind == "metrics":
        return f"Pushgateway {target['gateway']}"
    if state.kind == "records":
        return f"run records of {target.get('workflow')!r} in {target.get('uri')}"
    return state.key


# ---------------------------------------------------------------------- detached drainers

_started: dict[Path, tuple[int, float]] = {}  # the last drainer started per spool: pid, when
_children: set[int] = set()  # pids of drainers we started, reaped once they exit
_start_lock = threading.Lock()
# When every sink of a run was found served, runs within PROBE_EVERY seconds after it do not
# probe again (a lock probe is an open, a flock and a close: on a busy server, per run, it
# adds up); a drainer that exits meanwhile is replaced at the next probe, nothing is lost.
PROBE_EVERY = 0.5
_served: dict[tuple[Path, tuple[int, ...]], float] = {}


def _reap() -> None:
    for pid in list(_children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _children.discard(pid)


def _alive(pid: int) -> bool:
    return pid in _children


def ensure_drained(spool: Spool, sinks: Sequence[int]) -> None:
    """Start a detached drainer unless one serves each of ``sinks`` already (cheap: one
    lock probe per sink, at most every ``PROBE_EVERY`` seconds while they are served)."""
    key = (spool.path, tuple(sinks))
    now = time.monotonic()
    if now - _served.get(key, -PROBE_EVERY) < PROBE_EVERY:
        return
    if all(not sink_is_free(spool, s) for s in sinks):
        _served[key] = now
        return
    _served.pop(key, None)
    with _start_lock:
        _reap()
        last = _started.get(spool.path)
        if last is not None and _alive(last[0]) and time.monotonic() - last[1] < 2.0:
            return  # just started; it takes the locks in a moment
        env = dict(os.environ)
        secrets = CREDENTIALS.to_env()
        if secrets != "{}":
            env[CREDENTIALS_ENV] = secrets
        args = [sys.executable, "-m", __name__, "--spool", str(spool.path)]
        try:
            # posix_spawn, not Popen: a detached daemon with no object to wait on; its own
            # session, so Ctrl-C in the terminal never reaches it; no inherited descriptors.
            pid = os.posix_spawn(
                sys.executable,
                args,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)
                ],
                setsid=True,
            )
        except OSError as exc:
            log.warning("could not start the trace drainer (%s); traces stay spooled", exc)
            return
        _started[spool.path] = (pid, time.monotonic())
        _children.add(pid)


def linger_for(spool: Spool, idle_exit: float) -> float:
    """How long a new detached drainer waits for work once idle: ``idle_exit``, or ``LINGER``
    when the last one on this spool exited less than ``RESTARTED`` seconds ago."""
    try:
        exited = spool.counter(EXITED_AT)
    except Exception:  # noqa: BLE001 - no hint: the default
        return idle_exit
    return max(idle_exit, LINGER) if exited and time.time() - exited < RESTARTED else idle_exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="configurable_agents.observe.trace.drain")
    parser.add_argument("--spool", required=True)
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the CLI that started us
    with contextlib.suppress(OSError):
        os.nice(10)  # writing traces must never slow the runs of the foreground
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    for name in ("mlflow", "alembic", "opentelemetry"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    CREDENTIALS.merge_env()
    tune_gc()
    drainer = Drainer(open_spool(Path(args.spool)))
    idle_exit = linger_for(drainer.spool, args.idle_exit)
    drainer.hold = idle_exit > args.idle_exit
    drainer.run_detached(idle_exit=idle_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

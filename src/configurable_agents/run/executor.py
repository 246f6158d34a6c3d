"""Run a workflow: inputs → initial state → LangGraph → ``RunResult``.

Node timeouts: the graph runs in a worker thread (one hop per run, not per node) while the
calling thread waits on the run context, which always knows the running node's deadline. A node
past its deadline fails the run with ``NodeTimeoutError``: the run is abandoned, which cancels
the model call in flight (``providers.calls``: the async request is cancelled and its HTTP
connection closed; the ``local`` and ``test`` models stop at their next check) and lets no
further call or node start. The executor then waits up to ``LATE_CALL_WAIT_SECONDS`` for that
call to end and records what it spent on the run, flagged ``after_timeout``. A tool cannot be
stopped: it finishes in the background, and nothing runs after it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.errors import GraphRecursionError

from ..compile.plan import CompiledWorkflow, compile_workflow
from ..config.validate import LoadedWorkflow, load_workflow
from ..exceptions import MaxStepsExceededError, NodeTimeoutError, RunError, RunInterruptedError
from ..providers import check_environment
from . import hooks, mlflow_judge
from .budget import guard_for
from .context import EventHandler, RunContext
from .graph import graph_of
from .inputs import coerce_inputs
from .result import RunErrorInfo, RunResult, TokenUsage

WorkflowLike = str | Path | LoadedWorkflow | CompiledWorkflow
LATE_CALL_WAIT_SECONDS = 10.0  # a cancelled model call ends in milliseconds; this is a bound
log = logging.getLogger("configurable_agents.run")


class _DaemonWorkers:
    """Reused daemon threads. Unlike ``ThreadPoolExecutor`` (joined at interpreter exit), a
    node hung past its timeout does not keep the process alive."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Any, tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._tasks.put((future, fn, args))
        if spawn:
            threading.Thread(target=self._work, daemon=True, name="configurable-agents").start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                    future.set_exception(exc)
            del future, fn, args
            with self._lock:
                self._idle += 1


_workers = _DaemonWorkers()


def _invoke_with_node_timeouts(
    compiled: CompiledWorkflow, state: dict[str, Any], config: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    graph = graph_of(compiled)
    work = contextvars.copy_context()
    future: Future[dict[str, Any]] = _workers.submit(work.run, graph.invoke, state, config)

    def wake(_: Future[dict[str, Any]]) -> None:
        with ctx.changed:
            ctx.changed.notify_all()

    future.add_done_callback(wake)
    # No node's deadline comes before the run's start plus the shortest node timeout: look
    # then, and at each deadline after (a node wakes us only for an earlier one).
    shortest = min((n.timeout_seconds for n in compiled.nodes.values()), default=None)
    with ctx.changed:
        if shortest is not None:
            ctx.watch_until = ctx.started + shortest
        while not future.done():
            deadline = ctx.deadline
            now = time.perf_counter()
            if deadline is not None and deadline <= now:
                timeout = ctx.timeout
                break
            if deadline is None and ctx.watch_until <= now:
                ctx.watch_until = float("inf")  # between nodes: the next one wakes us
            elif deadline is not None:
                ctx.watch_until = deadline
            wait = ctx.watch_until - now
            ctx.changed.wait(None if wait == float("inf") else wait)
        else:
            return future.result()
    record = ctx.abandon()  # cancels the call in flight; the run keeps a copy of the record
    node = record.node if record else None
    running = ctx.settle(LATE_CALL_WAIT_SECONDS)
    if running:
        log.warning(
            "node '%s' timed out, and its model call was still running %g s later; what it "
            "spends from now on is not in the run's usage",
            node,
            LATE_CALL_WAIT_SECONDS,
        )
    raise NodeTimeoutError(
        f"node '{node}' did not finish within {timeout:g} s "
        "(raise timeout_seconds on the node or in config.execution)",
        node=node,
    )


def prepare(workflow: WorkflowLike, *, check_env: bool = True) -> CompiledWorkflow:
    """Load (if given a path), check this machine's providers, and compile a workflow."""
    if isinstance(workflow, CompiledWorkflow):
        return workflow
    loaded = workflow if isinstance(workflow, LoadedWorkflow) else load_workflow(workflow)
    if check_env:
        check_environment(loaded)
    return compile_workflow(loaded)


def initial_state(compiled: CompiledWorkflow, inputs: Mapping[str, Any]) -> dict[str, Any]:
    spec = compiled.workflow.spec
    values = coerce_inputs(inputs, spec, compiled.state_types)
    state: dict[str, Any] = {}
    for name, fdef in spec.state.fields.items():
        if name in values:
            state[name] = values[name]
        elif fdef.default is not None:
            state[name] = fdef.default
        else:
            state[name] = compiled.state_types[name].default_value()
    return state


def run_workflow(
    workflow: WorkflowLike,
    inputs: Mapping[str, Any] | None = None,
    *,
    on_event: EventHandler | None = None,
    callbacks: list[Any] | None = None,
    trace: bool | None = None,
    tags: Mapping[str, str] | None = None,
    trace_context: Mapping[str, str] | None = None,
) -> RunResult:
    """Run a workflow once and return its ``RunResult``.

    ``workflow`` is a path, a ``load_workflow`` result, or a ``compile_workflow`` result
    (compile once to run many times). ``on_event(kind, node_run)`` is called at each node's
    start and end; ``callbacks`` are LangChain callback handlers passed to every model call.
    Bad files and inputs raise ``UserError`` subclasses
    before any model is called; a run that starts and fails returns ``status="failed"``
    with ``error`` set (``raise_for_status()`` raises it).

    When ``config.observability.mlflow.enabled`` is true (or ``trace=True``; ``trace=False``
    turns it off) the run is traced to MLflow: ``result.trace_id`` names the trace, which is
    written in the background (``configurable_agents.flush()`` waits for it; it also happens
    at exit). ``tags`` are added to the trace (``user`` and ``team`` are also queryable).
    ``trace_context`` carries W3C ``traceparent`` / ``tracestate`` headers of a caller's
    trace: the run's OpenTelemetry spans continue it.
    """
    compiled = prepare(workflow)
    if any(j.spec.kind != "code" and j.spec.on_fail != "warn" for j in compiled.judges):
        mlflow_judge.prewarm()  # MLflow's judges load while the nodes run, not in a gate
    state = initial_state(compiled, inputs or {})
    given = {k: state[k] for k in (inputs or {}) if k in state}
    run_id = os.urandom(16).hex()
    observer = hooks.observer()
    started = observer.run_started(compiled, trace) if observer is not None else None
    report = _Report(observer, started, trace, tags, trace_context)
    ctx = RunContext(state, on_event)
    ctx.inputs = given
    ctx.budget = guard_for(compiled, run_id, observer)
    max_steps = compiled.workflow.spec.config.execution.max_steps
    config: dict[str, Any] = {"recursion_limit": max_steps, "configurable": {"ca_run": ctx}}
    if callbacks:
        config["callbacks"] = callbacks
    error: RunError | None = None
    try:
        final = _invoke_with_node_timeouts(compiled, state, config, ctx)
    except GraphRecursionError:
        error = MaxStepsExceededError(
            f"workflow '{compiled.name}' ran more than execution.max_steps={max_steps} node "
            f"steps (last node: '{ctx.nodes[-1].node if ctx.nodes else '?'}'); a loop probably "
            "never meets its exit condition. Fix the routes or raise config.execution.max_steps",
            node=ctx.nodes[-1].node if ctx.nodes else None,
        )
        final = ctx.state
    except RunError as exc:
        error = exc
        final = ctx.state
    except KeyboardInterrupt:
        # Ctrl-C: record the run as failed (and trace it) before letting the interrupt go on.
        ctx.abandon()
        interrupted = RunInterruptedError(
            "the run was interrupted (Ctrl-C or SIGTERM)",
            node=ctx.nodes[-1].node if ctx.nodes else None,
        )
        _finish(compiled, ctx, ctx.state, interrupted, given, run_id, report)
        raise
    return _finish(compiled, ctx, final, error, given, run_id, report)


@dataclass
class _Report:
    """What ``_finish`` hands the observer (see ``run.hooks``)."""

    observer: hooks.RunObserver | None
    started: Any
    trace: bool | None
    tags: Mapping[str, str] | None
    context: Mapping[str, str] | None


def _finish(
    compiled: CompiledWorkflow,
    ctx: RunContext,
    final: Mapping[str, Any],
    error: RunError | None,
    inputs: dict[str, Any],
    run_id: str,
    report: _Report,
) -> RunResult:
    duration_ms = (time.perf_counter() - ctx.started) * 1000
    usage = TokenUsage()
    for record in ctx.nodes:
        usage.add(record.usage)
    final = dict(final)
    result = RunResult(
        workflow=compiled.name,
        status="failed" if error else "succeeded",
        outputs={k: final.get(k) for k in compiled.output_fields},
        state=final,
        nodes=list(ctx.nodes),
        usage=usage,
        duration_ms=duration_ms,
        error=RunErrorInfo(type(error).__name__, str(error), error.node) if error else None,
        exception=error,
        started_ns=ctx.started_ns,
        inputs=inputs,
        run_id=run_id,
        prices=compiled.price_overrides(),
        budget=ctx.budget.summary() if ctx.budget is not None else None,
        judges=list(ctx.judges),
    )
    if report.observer is not None:
        report.observer.run_finished(
            compiled,
            result,
            report.started,
            trace=report.trace,
            tags=report.tags,
            context=report.context,
        )
    return result

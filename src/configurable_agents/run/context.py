"""Per-run bookkeeping shared by the nodes of one run (passed in LangGraph's config).

It also carries the running node's deadline: the executor runs the graph in a worker thread
and waits on ``changed`` until ``watch_until`` (its next look at the deadline); when the
running node passes its deadline the executor abandons the run. A node wakes the executor only
when its deadline comes before ``watch_until`` (waking a thread on another core costs tens of
microseconds, several times per run otherwise). ``abandon`` cancels the run's ``CancelToken``
(which stops the model call in flight where the provider allows, see ``providers.calls``) and
gives the run a copy of the running node's record: the worker may still touch its own, but the
run's result never changes under a reader.
A model call that ends after that (``end_call``) is kept aside, flagged ``after_timeout``;
``settle`` waits for the calls in flight and adds them to the copy, tokens included.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import RunError
from ..providers.calls import CallScope, CancelToken
from .result import LLMCall, NodeRun

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode
    from .budget import BudgetGuard

EventHandler = Callable[[str, NodeRun], None]


class RunAbandoned(RunError):
    """Raised inside a worker whose run already ended (timed out)."""


class RunContext:
    """Node records, call counters, the running node's deadline and the last known state."""

    def __init__(self, state: dict[str, Any], on_event: EventHandler | None = None) -> None:
        self.started = time.perf_counter()
        self.started_ns = time.time_ns()
        self.state = dict(state)
        self.nodes: list[NodeRun] = []
        self.on_event = on_event
        self.budget: BudgetGuard | None = None  # config.budget, asked before each model call
        self.inputs: dict[str, Any] = {}  # the run's given inputs ({{ inputs }} of judges)
        self.judges: list[Any] = []  # run.judges.JudgeResult of the judges run in the run
        self.changed = threading.Condition()
        self.current: NodeRun | None = None
        self.deadline: float | None = None
        self.timeout: float | None = None
        self.watch_until = float("inf")  # when the executor looks at ``deadline`` next
        self.abandoned = False
        self.cancel = CancelToken()
        self.in_flight = 0  # model calls running now
        self.late: list[tuple[NodeRun, LLMCall]] = []  # calls that ended after ``abandon``
        self._copies: dict[int, NodeRun] = {}  # id(worker's record) -> the run's copy
        self._visits: dict[str, int] = {}
        self._counters: dict[str, int] = {}  # per-run counters of the providers (CallScope)
        self._counters_lock = threading.Lock()

    def start_node(self, node: CompiledNode, prompt_version: str | None = None) -> NodeRun:
        """Record a node visit; ``prompt_version``: the registry version its prompt came from
        (``CompiledNode.prompt()``)."""
        now = time.perf_counter()
        with self.changed:
            if self.abandoned:
                raise RunAbandoned("the run already ended", node=node.id)
            visit = self._visits.get(node.id, 0)
            self._visits[node.id] = visit + 1
            record = NodeRun(
                node=node.id,
                visit=visit,
                started_ms=(now - self.started) * 1000,
                started_ns=time.time_ns(),
                provider=node.provider.name,
                model=node.model_name,
                prompt_version=prompt_version,
            )
            self.nodes.append(record)
            self.current = record
            self.timeout = node.timeout_seconds
            self.deadline = now + node.timeout_seconds
            if self.deadline < self.watch_until:
                self.changed.notify_all()
        if self.on_event:
            self.on_event("node_start", record)
        return record

    def finish_node(
        self, record: NodeRun, seconds: float, updates: dict[str, Any] | None = None
    ) -> None:
        with self.changed:
            if self.abandoned:
                return
            record.duration_ms = seconds * 1000
            if updates:
                self.state.update(updates)
            record.state_after = dict(self.state)
            self.current = None
            self.deadline = None  # the executor finds out at its next look: no need to wake it
        if self.on_event:
            self.on_event("node_end", record)

    def abandon(self) -> NodeRun | None:
        """Mark the run as over (the running node timed out, or Ctrl-C), cancel the model call
        in flight, and return the run's copy of the running node's record."""
        with self.changed:
            self.abandoned = True
            record = self.current
            if record is not None:
                snapshot = _copy_record(record)
                self._copies[id(record)] = snapshot
                self.nodes = [snapshot if n is record else n for n in self.nodes]
                snapshot.status = "failed"
                snapshot.duration_ms = (
                    time.perf_counter() - self.started
                ) * 1000 - snapshot.started_ms
                record = snapshot
        self.cancel.cancel()
        if record is not None and self.on_event:
            self.on_event("node_end", record)
        return record

    def scope(self, node_id: str) -> CallScope:
        """The ``CallScope`` of this run's model calls from ``node_id``."""
        return CallScope(node_id, self.cancel, self._counters, self._counters_lock)

    def begin_call(self, node_id: str) -> None:
        """A model call starts (refused once the run is abandoned: no new spending)."""
        with self.changed:
            if self.abandoned:
                raise RunAbandoned("the run already ended", node=node_id)
            self.in_flight += 1

    def end_call(self, record: NodeRun, call: LLMCall) -> bool:
        """Record a finished (or failed) model call; False when the run was abandoned
        meanwhile: the call is then kept as late spending, flagged ``after_timeout``."""
        with self.changed:
            self.in_flight -= 1
            if self.abandoned:
                call.after_timeout = True
                self.late.append((record, call))
                self.changed.notify_all()
                return False
            _add_call(record, call)
        return True

    def settle(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the model calls in flight to end (they were cancelled)
        and add every late call to the run's records; return how many are still running."""
        with self.changed:
            self.changed.wait_for(lambda: self.in_flight <= 0, timeout)
            late, self.late = self.late, []
            for record, call in late:
                _add_call(self._copies.get(id(record), record), call)
            return self.in_flight


def _add_call(record: NodeRun, call: LLMCall) -> None:
    record.calls.append(call)
    record.llm_calls += 1
    record.usage.add(call.usage)
    if call.model:
        record.model = call.model


def _copy_record(record: NodeRun) -> NodeRun:
    """A copy of ``record`` that shares no list or counter with it."""
    return dataclasses.replace(
        record,
        usage=copy.copy(record.usage),
        tool_calls=list(record.tool_calls),
        responses=list(record.responses),
        validation_errors=list(record.validation_errors),
        outputs=dict(record.outputs),
        calls=list(record.calls),
    )

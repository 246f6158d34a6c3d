"""Per-run bookkeeping shared by the nodes of one run (passed in LangGraph's config).

It also carries the running node's deadline: the executor runs the graph in a worker thread
and waits on ``changed``; when the running node passes its deadline the executor abandons the
run (the worker cannot be killed, but ``start_node`` refuses to start anything after that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import RunError
from .result import NodeRun

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode

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
        self.changed = threading.Condition()
        self.current: NodeRun | None = None
        self.deadline: float | None = None
        self.timeout: float | None = None
        self.abandoned = False
        self._visits: dict[str, int] = {}
        self._calls: dict[str, int] = {}

    def start_node(self, node: CompiledNode) -> NodeRun:
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
            )
            self.nodes.append(record)
            self.current = record
            self.timeout = node.timeout_seconds
            self.deadline = now + node.timeout_seconds
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
            self.deadline = None
            self.changed.notify_all()
        if self.on_event:
            self.on_event("node_end", record)

    def abandon(self) -> NodeRun | None:
        """Mark the run as over (the running node timed out); return that node's record."""
        with self.changed:
            self.abandoned = True
            record = self.current
            if record is not None:
                record.status = "failed"
                record.duration_ms = (time.perf_counter() - self.started) * 1000 - record.started_ms
        if record is not None and self.on_event:
            self.on_event("node_end", record)
        return record

    def next_call(self, node_id: str) -> int:
        """How many structured calls this node has made so far in this run (then one more)."""
        with self.changed:
            n = self._calls.get(node_id, 0)
            self._calls[node_id] = n + 1
        return n

"""Per-run bookkeeping shared by the nodes of one run (passed in LangGraph's config)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .result import NodeRun

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode

EventHandler = Callable[[str, NodeRun], None]


class RunContext:
    """Node records, call counters and the last known state of one run."""

    def __init__(self, state: dict[str, Any], on_event: EventHandler | None = None) -> None:
        self.started = time.perf_counter()
        self.state = dict(state)
        self.nodes: list[NodeRun] = []
        self.on_event = on_event
        self._visits: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def start_node(self, node: CompiledNode) -> NodeRun:
        with self._lock:
            visit = self._visits.get(node.id, 0)
            self._visits[node.id] = visit + 1
        record = NodeRun(
            node=node.id,
            visit=visit,
            started_ms=(time.perf_counter() - self.started) * 1000,
            provider=node.provider.name,
            model=node.model_name,
        )
        with self._lock:
            self.nodes.append(record)
        if self.on_event:
            self.on_event("node_start", record)
        return record

    def finish_node(
        self, record: NodeRun, seconds: float, updates: dict[str, Any] | None = None
    ) -> None:
        record.duration_ms = seconds * 1000
        if updates:
            with self._lock:
                self.state.update(updates)
        if self.on_event:
            self.on_event("node_end", record)

    def next_call(self, node_id: str) -> int:
        """How many structured calls this node has made so far in this run (then one more)."""
        with self._lock:
            n = self._calls.get(node_id, 0)
            self._calls[node_id] = n + 1
        return n

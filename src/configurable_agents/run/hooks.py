"""How the run layer reports runs to whoever observes them, without importing them.

``run_workflow`` calls the installed ``RunObserver`` twice per run: ``run_started`` before the
graph runs (its return value is handed back at the end) and ``run_finished`` with the
finished ``RunResult``. The package installs ``observe.dispatch.OBSERVER`` when it is
imported (``configurable_agents/__init__.py``); with none installed, runs are not observed.
An observer must never raise into the run and must return quickly: it is on the caller's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from .result import RunResult


class RunObserver(Protocol):
    def run_started(self, compiled: CompiledWorkflow, trace: bool | None) -> Any: ...

    def run_finished(
        self,
        compiled: CompiledWorkflow,
        result: RunResult,
        started: Any,
        *,
        trace: bool | None,
        tags: Mapping[str, str] | None,
        context: Mapping[str, str] | None,
    ) -> None: ...


_observer: RunObserver | None = None


def install(observer: RunObserver | None) -> RunObserver | None:
    """Make ``observer`` the one every run reports to; return the previous one."""
    global _observer
    previous, _observer = _observer, observer
    return previous


def observer() -> RunObserver | None:
    return _observer

"""Batch runs: a workflow over every row of a data file (``runner.run_batch``), resumable,
on a local pool (``engine``) or on Ray (``ray_engine``); ``compare`` runs two variants over
the same rows. Sits above ``observe`` (its rows are traced like any run) and below ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import BatchOptions, run_batch
    from .summary import BatchSummary

_LAZY = {
    "BatchOptions": ".runner",
    "BatchSummary": ".summary",
    "run_batch": ".runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BatchOptions", "BatchSummary", "run_batch"]

"""Where validation collects its problems: each an ``Issue`` with file, line and hint.

The rules live in ``validate`` (sections together), ``shape_errors`` (pydantic's shape
errors, reworded), ``judges`` and ``governance``; all add to one ``Collector``, so one pass
reports every problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..exceptions import Issue
from .loader import Document, Path_

__all__ = ["Collector", "did_you_mean", "sorted_issues"]


class Collector:
    """The problems found so far in one document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[Issue] = []

    def add(
        self, path: Path_, message: str, hint: str | None = None, line: int | None = None
    ) -> None:
        self.issues.append(
            Issue(
                message,
                file=self.doc.file,
                line=line or self.doc.line_of(path),
                hint=hint,
                path=tuple(path),
            )
        )


def did_you_mean(name: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def sorted_issues(issues: list[Issue]) -> list[Issue]:
    """Each problem once, in file order."""
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: i.line or 0)

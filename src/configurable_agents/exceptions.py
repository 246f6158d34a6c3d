"""Errors raised by configurable-agents.

The tree, in one place::

    ConfigurableAgentsError
    ├── UserError                  the user can fix it; CLI exit code 2
    │   ├── WorkflowFileError      the file cannot be read or parsed as YAML
    │   ├── WorkflowValidationError one or more problems in the workflow (all of them, at once)
    │   ├── InputError             run inputs missing, unknown or of the wrong type
    │   └── MissingExtraError      an optional dependency is not installed (also an ImportError)
    └── RunError                   the run started and failed; CLI exit code 1
        ├── OutputValidationError  a node's output stayed invalid after all retries
        ├── NodeTimeoutError       a node took longer than its timeout
        ├── MaxStepsExceededError  the graph took more than ``execution.max_steps`` steps
        ├── RoutingError           no route matched and no default route was given
        ├── ProviderError          the model provider raised while answering
        ├── BudgetExceededError    a model call would have passed a ``config.budget`` limit
        ├── BudgetUnavailableError ``action: block`` and the spent amount cannot be read
        ├── QualityGateError       a ``block`` / ``retry`` judge failed a node's output
        └── RunInterruptedError    Ctrl-C or SIGTERM stopped the run (recorded, then re-raised)

Every ``UserError`` carries ``Issue`` records (file, line, message, hint, path) so that callers
can print each one as ``file:line: message`` followed by its hint; ``path`` says where the
problem is in the data (``("nodes", 1, "prompt")`` in a workflow, ``("topic",)`` in run inputs),
so that programs (the HTTP server's 422 body) need not read it out of the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BudgetExceededError",
    "BudgetUnavailableError",
    "ConfigurableAgentsError",
    "InputError",
    "Issue",
    "MaxStepsExceededError",
    "MissingExtraError",
    "NodeTimeoutError",
    "OutputValidationError",
    "ProviderError",
    "QualityGateError",
    "RoutingError",
    "RunError",
    "RunInterruptedError",
    "UserError",
    "WorkflowFileError",
    "WorkflowValidationError",
]


@dataclass(frozen=True)
class Issue:
    """One problem found in a workflow file or in run inputs.

    ``path``: keys and list indexes from the top of the data to the problem, as far as known
    (empty: the whole file or all inputs). ``code``: a short machine-readable kind, e.g.
    ``missing``, ``unknown_input`` or ``invalid_input`` for run inputs (None when unset).
    """

    message: str
    file: str | None = None
    line: int | None = None
    hint: str | None = None
    path: tuple[str | int, ...] = field(default=())
    code: str | None = None

    def location(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigurableAgentsError(Exception):
    """Base class of every error this package raises on purpose."""


class UserError(ConfigurableAgentsError):
    """A mistake the user can fix: bad file, bad input, missing dependency."""

    def __init__(self, issues: list[Issue] | Issue | str) -> None:
        if isinstance(issues, str):
            issues = [Issue(issues)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues: list[Issue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class WorkflowFileError(UserError):
    """The workflow file is missing, unreadable, too large or not valid YAML."""


class WorkflowValidationError(UserError):
    """The workflow is well-formed YAML but breaks the file format's rules."""


class InputError(UserError):
    """Run inputs are missing, unknown, or cannot be converted to their declared type."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is missing; the message holds the exact install command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            Issue(
                f"{purpose} needs the '{package}' package, which is not installed",
                hint=f'pip install "configurable-agents[{extra}]"',
            )
        )


class RunError(ConfigurableAgentsError):
    """The run started and then failed."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        self.node = node
        super().__init__(message)


class OutputValidationError(RunError):
    """A node's output did not match its ``output_schema`` after every retry."""

    def __init__(self, message: str, *, node: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(message, node=node)


class NodeTimeoutError(RunError):
    """A node ran longer than its timeout."""


class MaxStepsExceededError(RunError):
    """The graph ran more steps than ``execution.max_steps`` allows (usually a loop)."""


class RoutingError(RunError):
    """No conditional route matched the state."""


class ProviderError(RunError):
    """The model provider failed while answering."""


class RunInterruptedError(RunError):
    """The run was stopped by Ctrl-C or SIGTERM; its trace records this error."""


class BudgetExceededError(RunError):
    """A model call was refused: its worst case would have passed a ``config.budget`` limit
    (``action: block``). ``budget`` is ``per_run_usd``, ``daily_usd`` or ``monthly_usd``;
    ``window`` the run, day or month it covers; ``spent`` what the window had spent (and
    reserved) before the call, ``worst_case`` the refused call's bound, ``limit`` the budget."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None,
        budget: str,
        window: str,
        spent: float,
        worst_case: float,
        limit: float,
    ) -> None:
        self.budget = budget
        self.window = window
        self.spent = spent
        self.worst_case = worst_case
        self.limit = limit
        super().__init__(message, node=node)


class BudgetUnavailableError(RunError):
    """``action: block``, and what the budget's window has spent cannot be read (the spend
    ledger or the tracking store): no model call is made without knowing it."""


class QualityGateError(RunError):
    """A judge with ``on_fail: block`` (or ``retry``, its retries spent) failed a node's
    output: ``judge`` names it, ``score`` is what it gave (None: it could not score),
    ``threshold`` what passing needs, ``rationale`` why."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None,
        judge: str,
        score: float | None,
        threshold: float,
        rationale: str,
    ) -> None:
        self.judge = judge
        self.score = score
        self.threshold = threshold
        self.rationale = rationale
        super().__init__(message, node=node)

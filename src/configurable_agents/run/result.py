"""What a run returns: outputs, final state, per-node timings, token usage, status, error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..exceptions import RunError


@dataclass
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ToolCall:
    name: str
    args: dict[str, Any]
    result: str
    duration_ms: float
    error: bool = False


@dataclass
class NodeRun:
    """One execution of one node (a node in a loop has one record per visit)."""

    node: str
    visit: int
    started_ms: float  # since the run started
    duration_ms: float = 0.0
    status: Literal["succeeded", "failed"] = "succeeded"
    model: str = ""
    provider: str = ""
    retries: int = 0
    llm_calls: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt: str = ""
    responses: list[str] = field(default_factory=list)
    validation_errors: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        data = {
            "node": self.node,
            "visit": self.visit,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "model": self.model,
            "provider": self.provider,
            "retries": self.retries,
            "llm_calls": self.llm_calls,
            "usage": self.usage.to_dict(),
            "tool_calls": [asdict(t) for t in self.tool_calls],
        }
        if detail:
            data.update(
                prompt=self.prompt,
                responses=self.responses,
                validation_errors=self.validation_errors,
            )
        return data


@dataclass
class RunErrorInfo:
    type: str
    message: str
    node: str | None = None


@dataclass
class RunResult:
    """The result of ``run_workflow``. ``status`` is ``succeeded`` or ``failed``."""

    workflow: str
    status: Literal["succeeded", "failed"]
    outputs: dict[str, Any]
    state: dict[str, Any]
    nodes: list[NodeRun]
    usage: TokenUsage
    duration_ms: float
    error: RunErrorInfo | None = None
    exception: RunError | None = field(default=None, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> RunResult:
        """Raise the run's error if it failed; return self otherwise."""
        if self.exception is not None:
            raise self.exception
        return self

    def usage_by_model(self) -> dict[str, TokenUsage]:
        out: dict[str, TokenUsage] = {}
        for n in self.nodes:
            u = out.setdefault(n.model, TokenUsage())
            u.input_tokens += n.usage.input_tokens
            u.output_tokens += n.usage.output_tokens
        return out

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "status": self.status,
            "outputs": self.outputs,
            "duration_ms": round(self.duration_ms, 3),
            "usage": self.usage.to_dict(),
            "nodes": [n.to_dict(detail) for n in self.nodes],
            "error": asdict(self.error) if self.error else None,
            **({"state": self.state} if detail else {}),
        }

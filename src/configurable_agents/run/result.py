"""What a run returns: outputs, final state, per-node timings, token usage, status, error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..exceptions import RunError
from ..usage import TokenUsage

if TYPE_CHECKING:
    from ..pricing import CostSummary, PriceOverrides


@dataclass
class LLMCall:
    """One chat-model call: a tool-loop round or a structured-output attempt."""

    kind: Literal["tools", "structured"]
    model: str
    provider: str
    started_ns: int  # wall clock (time.time_ns)
    duration_ms: float
    messages: list[Any]  # the LangChain messages sent
    response: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # requested by the model
    # Why the output was rejected (a retry follows, or the node fails), or, when the call
    # itself failed, the provider's error as "Type: message" (``response`` is then empty).
    error: str | None = None
    cost_usd: float | None = None  # filled by run.cost.summarize_cost
    input_cost_usd: float | None = None
    output_cost_usd: float | None = None
    # The call failed with a transient provider error of this kind (rate_limit, server_error,
    # timeout, connection): another attempt follows if config.execution.retry allows.
    transient_error: str | None = None
    # The call was still running when its node timed out; its tokens are in the node's and the
    # run's usage all the same (what it spent is spent).
    after_timeout: bool = False
    cancelled: bool = False  # the node's timeout stopped it (usage: what it had spent by then)
    # The call raised instead of answering: ``error`` is the provider's error (or why it was
    # cancelled), not a rejected output.
    failed: bool = False


@dataclass
class ToolCall:
    name: str
    args: dict[str, Any]
    result: str
    duration_ms: float
    error: bool = False
    started_ns: int = 0  # wall clock (time.time_ns)


@dataclass
class NodeRun:
    """One execution of one node (a node in a loop has one record per visit)."""

    node: str
    visit: int
    started_ms: float  # since the run started
    started_ns: int = 0  # wall clock (time.time_ns)
    duration_ms: float = 0.0
    status: Literal["succeeded", "failed"] = "succeeded"
    model: str = ""
    provider: str = ""
    retries: int = 0
    quality_retries: int = 0  # reruns after an on_fail: retry judge failed the output
    llm_calls: int = 0
    provider_retries: int = 0  # model calls tried again after a transient provider error
    usage: TokenUsage = field(default_factory=TokenUsage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt: str = ""
    responses: list[str] = field(default_factory=list)
    validation_errors: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    calls: list[LLMCall] = field(default_factory=list)
    cost_usd: float | None = None  # filled by run.cost.summarize_cost
    error: str | None = None  # "Type: message" when the node failed
    state_after: dict[str, Any] | None = None  # the run's state once this node finished
    # ``name/version`` of the registry prompt this node ran on (``prompt_ref``), else None
    prompt_version: str | None = None

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        data = {
            "node": self.node,
            "visit": self.visit,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "model": self.model,
            "provider": self.provider,
            "retries": self.retries,
            "quality_retries": self.quality_retries,
            "provider_retries": self.provider_retries,
            "llm_calls": self.llm_calls,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "tool_calls": [asdict(t) for t in self.tool_calls],
        }
        if self.prompt_version:
            data["prompt_version"] = self.prompt_version
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
    started_ns: int = 0  # wall clock (time.time_ns)
    inputs: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""  # 32 hex digits; the MLflow trace id is "tr-" + run_id
    trace_id: str | None = None  # set when the run is traced to MLflow
    trace_uri: str | None = None  # the tracking store it goes to
    trace_error: str | None = None  # why writing the trace failed (set by the writer)
    trace_written: bool = False  # set by the writer once the trace is in the store
    cost: CostSummary | None = field(default=None, repr=False)
    prices: PriceOverrides | None = field(default=None, repr=False)  # the workflow's pricing
    budget: dict[str, Any] | None = None  # config.budget's state (run.budget.BudgetGuard)
    # ``judges:`` verdicts (run.judges.JudgeResult): block / retry ones when the run returns,
    # warn ones added after it (``configurable_agents.flush()`` waits for them). None: a
    # record written before judges existed.
    judges: list[Any] | None = None

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
            out.setdefault(n.model, TokenUsage()).add(n.usage)
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
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            **({"budget": self.budget} if self.budget else {}),
            **({"judges": [j.to_dict() for j in self.judges]} if self.judges else {}),
            **({"state": self.state} if detail else {}),
        }


__all__ = ["LLMCall", "NodeRun", "RunErrorInfo", "RunResult", "TokenUsage", "ToolCall"]

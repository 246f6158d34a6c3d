"""The HTTP API's JSON shapes, as pydantic models: they document the API in OpenAPI.

Responses are built as plain dicts and sent as they are (validating every response again
would only cost time); these models describe them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RunStatus = Literal["queued", "running", "succeeded", "failed"]


class RunErrorBody(BaseModel):
    type: str = Field(
        description="The error class, e.g. OutputValidationError, NodeTimeoutError, or "
        "ServerStopped for a run the server stopped before it finished."
    )
    message: str
    node: str | None = Field(None, description="The node that failed, when one did.")


class NodeTiming(BaseModel):
    """One execution of one node (a node in a loop has one entry per visit)."""

    node: str
    visit: int
    status: Literal["succeeded", "failed"]
    duration_ms: float
    model: str
    provider: str
    retries: int
    llm_calls: int
    usage: dict[str, int] = Field(description="input_tokens, output_tokens, total_tokens")
    cost_usd: float | None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class JudgeVerdict(BaseModel):
    """One judge's verdict on one output (``judges:`` in the workflow file)."""

    name: str = Field(description="The judge (the assessment's name on the trace).")
    node: str | None = Field(description="The node judged; null: the run's final outputs.")
    visit: int | None
    kind: Literal["llm", "mlflow", "code"]
    on_fail: Literal["warn", "block", "retry"]
    phase: Literal["in_run", "after_run"] = Field(
        description="in_run: block / retry judges; after_run: warn judges (added later)."
    )
    value: float | bool | None
    score: float | None = Field(description="The value as a number (pass/fail: 1 or 0).")
    passed: bool | None = Field(description="null: the judge could not score (see error).")
    threshold: float
    scale: list[float] | None = Field(description="[lowest, highest]; null for pass/fail.")
    rationale: str
    source_type: Literal["LLM_JUDGE", "CODE"]
    source_id: str
    attempt: int = Field(description="The node's quality retry the verdict is about.")
    duration_ms: float
    error: str | None
    usage: dict[str, int] | None = Field(description="The judge model's tokens (null: code).")
    cost_usd: float | None


class RunRecord(BaseModel):
    """A run, as ``POST /runs`` (waiting) and ``GET /runs/{id}`` return it."""

    id: str = Field(description="The server's id of this run (32 hex digits).")
    workflow: str
    workflow_version: str
    status: RunStatus
    inputs: dict[str, Any]
    tags: dict[str, str]
    outputs: dict[str, Any] | None = Field(
        None, description="The state fields the workflow's nodes write (null until finished)."
    )
    error: RunErrorBody | None = None
    run_id: str | None = Field(
        None, description="The executor's run id; the MLflow trace id is 'tr-' + run_id."
    )
    trace_id: str | None = Field(None, description="The MLflow trace id, when the run is traced.")
    cost_usd: float | None = Field(None, description="List price of the reported tokens, USD.")
    usage: dict[str, int] | None = None
    duration_ms: float | None = None
    nodes: list[NodeTiming] = Field(default_factory=list)
    judges: list[JudgeVerdict] | None = Field(
        None,
        description="The judges' verdicts; warn judges' are added shortly after the run ends.",
    )
    created_at: str = Field(description="ISO 8601, UTC.")
    started_at: str | None = None
    finished_at: str | None = None


class RunAccepted(BaseModel):
    """``POST /runs?wait=false``: the run is queued; poll ``GET /runs/{id}`` (the
    ``Location`` header)."""

    id: str
    status: Literal["queued"] = "queued"


class RunPage(BaseModel):
    items: list[RunRecord] = Field(description="Newest first.")
    total: int = Field(description="Runs matching the filter, in all pages.")
    limit: int
    offset: int
    next: str | None = Field(None, description="The URL of the next page, if there is one.")


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    workflow: str
    version: str
    uptime_seconds: float
    active_runs: int = Field(description="Runs executing now.")
    queued_runs: int = Field(description="Runs waiting for a free slot.")
    max_concurrency: int
    replica: str = Field(
        description="This server process's id in the run database (the owner of its runs)."
    )


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where, e.g. ["body", "inputs", "topic"].')
    msg: str
    type: str
    hint: str | None = Field(None, description="How to fix it.")


class ValidationErrorBody(BaseModel):
    detail: list[FieldError]


class ErrorBody(BaseModel):
    detail: str

"""Per-node run-time plans, built once per workflow and shared by every run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.types import RetryPolicy
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..config.bounds import applicable, intersect
from ..config.conditions import Condition, compile_condition
from ..config.schema import LLMConfig, Node, RetryConfig
from ..config.template import Template, parse_template
from ..config.types import TypeRef
from ..config.validate import LoadedWorkflow, resolve_model_path
from ..providers import (
    PROVIDERS,
    ProviderInfo,
    create_chat_model,
    merge_llm,
    structured_runnable,
)
from ..providers.errors import classify_error
from ..tools import resolve_tool

if TYPE_CHECKING:
    from ..pricing import PriceOverrides
    from ..prompts import PromptSource
    from .judges import CompiledJudge


@dataclass
class CompiledNode:
    spec: Node
    template: Template
    output_model: type[BaseModel]
    json_schema: dict[str, Any]
    llm: LLMConfig
    provider: ProviderInfo
    model: BaseChatModel
    tools: list[BaseTool]
    timeout_seconds: float
    max_retries: int
    retry: RetryPolicy = field(default_factory=lambda: retry_policy(RetryConfig()))
    structured_mode: Literal["json_schema", "per_field"] = "json_schema"
    # ``name/version`` of the registry prompt (``prompt_ref``) the template came from
    prompt_version: str | None = None
    # an alias ``prompt_ref``: re-resolved at run time after its TTL (``prompt()``)
    prompt_source: PromptSource | None = field(default=None, repr=False)
    # ``judges:`` with on_fail block / retry on this node, run right after it (run.judges)
    gates: list[CompiledJudge] = field(default_factory=list)
    _structured: Runnable[Any, Any] | None = field(default=None, repr=False)
    _fields: dict[str, Runnable[Any, Any]] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    def prompt(self) -> tuple[Template, str | None]:
        """The template a node visit renders and the registry version it came from: fixed at
        compile time, except for an alias ``prompt_ref``, whose ``PromptSource`` follows the
        alias (``template`` / ``prompt_version`` then show the version last used)."""
        if self.prompt_source is None:
            return self.template, self.prompt_version
        template, version = self.prompt_source.current()
        if template is not self.template:
            self.template, self.prompt_version = template, version
        return template, version

    def structured(self) -> Runnable[Any, Any]:
        """The model asked for this node's output schema (built once, on first use)."""
        if self._structured is None:
            self._structured = structured_runnable(self.model, self.json_schema)
        return self._structured

    def field_runnable(self, name: str) -> Runnable[Any, Any]:
        """The model asked for a one-key object holding field ``name`` (``per_field``)."""
        if name not in self._fields:
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {name: self.json_schema["properties"][name]},
                "required": [name],
                "additionalProperties": False,
            }
            if "$defs" in self.json_schema:
                schema["$defs"] = self.json_schema["$defs"]
            self._fields[name] = structured_runnable(self.model, schema)
        return self._fields[name]

    def text_options(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Call options of a free-text field (``per_field``): the provider's stop boundary."""
        from ..providers.local import ChatLocalLlama

        if isinstance(self.model, ChatLocalLlama):
            from ..providers.local_structured import text_options

            return text_options(self.model)
        return {}

    @property
    def model_name(self) -> str:
        return self.llm.model or self.provider.default_model


@dataclass
class CompiledRoute:
    condition: Condition | None  # None: the default route
    target: str


@dataclass
class CompiledWorkflow:
    """Everything a run needs; build once with ``compile_workflow`` and run many times."""

    workflow: LoadedWorkflow
    nodes: dict[str, CompiledNode]
    routes: dict[str, list[CompiledRoute]]  # conditional edges by source node
    plain_edges: list[tuple[str, str]]
    output_fields: list[str]  # state fields that some node writes, in first-written order
    # The LangGraph graph, built by ``run.graph.graph_of`` on the first run (compile/ plans,
    # run/ executes: the graph's nodes are the run-time node functions).
    graph_cache: Any = field(default=None, repr=False, compare=False)
    judges: list[CompiledJudge] = field(default_factory=list)  # ``judges:``, in file order
    _prices: PriceOverrides | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def state_types(self) -> dict[str, TypeRef]:
        return self.workflow.state_types

    def price_overrides(self) -> PriceOverrides:
        """Prices from ``config.pricing`` (inline wins over its file) and the env price file."""
        if self._prices is None:
            self._prices = workflow_prices(self.workflow)
        return self._prices


def workflow_prices(workflow: LoadedWorkflow) -> PriceOverrides:
    """Prices from ``config.pricing`` (inline wins over its file) and the env price file."""
    from ..pricing import ModelPrice, env_price_overrides, load_price_file

    pricing = workflow.spec.config.pricing
    prices = env_price_overrides()
    if pricing.file:
        prices.update(load_price_file(workflow.directory / pricing.file))
    for name, spec in pricing.models.items():
        prices[name] = ModelPrice.from_mapping(spec.model_dump())
    return prices


@dataclass
class _Plan:
    model_name: str
    provider: ProviderInfo
    llm: LLMConfig


def retry_policy(config: RetryConfig) -> RetryPolicy:
    """LangGraph's ``RetryPolicy`` for ``config.execution.retry``: which provider errors are
    retried (``providers.errors.classify_error``), how often, and how long to wait."""
    kinds = frozenset(config.on)

    def transient(exc: Exception) -> bool:
        return classify_error(exc) in kinds

    return RetryPolicy(
        initial_interval=config.backoff.initial,
        backoff_factor=config.backoff.multiplier,
        max_interval=config.backoff.max,
        max_attempts=config.attempts,
        jitter=config.backoff.jitter,
        retry_on=transient,
    )


def _output_model(node: Node, state: dict[str, TypeRef]) -> type[BaseModel]:
    name = "".join(p.capitalize() for p in node.id.split("_")) + "Output"
    specs: dict[str, Any] = {}
    if node.output_schema is not None:
        for f in node.output_schema.fields:
            tref = f.type_ref()
            if f.name in state and state[f.name].bounds:
                # what the node writes must fit the state field's bounds too
                both = intersect(tref.bound_map, state[f.name].bound_map)
                tref = tref.with_bounds(applicable(tref.kind, both))
            annotation = tref.annotation(name + f.name.capitalize())
            specs[f.name] = (annotation, Field(..., description=f.description or None))
    else:
        for out in node.outputs:
            specs[out] = (state[out].annotation(name + out.capitalize()), ...)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **specs)


def structured_mode(node: Node, llm: LLMConfig) -> Literal["json_schema", "per_field"]:
    """How this node asks for its typed output: ``nodes[].structured``, else
    ``llm.structured`` (``config.llm`` merged with the node's ``llm``), else ``auto``:
    ``per_field`` on provider ``local``, ``json_schema`` elsewhere."""
    requested = node.structured or llm.structured or "auto"
    if requested == "auto":
        return "per_field" if (llm.provider or "local") == "local" else "json_schema"
    return requested


def compile_workflow(workflow: LoadedWorkflow) -> CompiledWorkflow:
    """Build the run-time plan of a validated workflow (no model is loaded or called)."""
    from ..prompts import resolve_prompts

    spec = workflow.spec
    state = workflow.state_types
    prompts = resolve_prompts(workflow)  # the registry's templates, before any model call
    nodes: dict[str, CompiledNode] = {}
    models: dict[str, BaseChatModel] = {}
    retry = retry_policy(spec.config.execution.retry)
    for node in spec.nodes:
        llm = merge_llm(spec.config.llm, node.llm)
        if llm.model_path:
            llm = llm.model_copy(
                update={"model_path": str(resolve_model_path(llm.model_path, workflow.directory))}
            )
        key = llm.model_dump_json()
        if key not in models:
            models[key] = create_chat_model(llm)
        output_model = _output_model(node, state)
        schema = output_model.model_json_schema()
        resolved = prompts.get(node.id)
        nodes[node.id] = CompiledNode(
            spec=node,
            template=resolved.template if resolved else parse_template(node.prompt or "")[0],
            prompt_version=resolved.version.label if resolved and resolved.version else None,
            prompt_source=resolved.source if resolved else None,
            output_model=output_model,
            json_schema=schema,
            llm=llm,
            provider=PROVIDERS[llm.provider or "local"],
            model=models[key],
            tools=[resolve_tool(t) for t in node.tools],
            timeout_seconds=node.timeout_seconds or spec.config.execution.timeout_seconds,
            max_retries=(
                node.max_retries
                if node.max_retries is not None
                else spec.config.execution.max_retries
            ),
            retry=retry,
            structured_mode=structured_mode(node, llm),
        )
    routes: dict[str, list[CompiledRoute]] = {}
    plain: list[tuple[str, str]] = []
    for edge in spec.edges:
        if edge.to is not None:
            plain.append((edge.from_, edge.to))
        else:
            routes[edge.from_] = [
                CompiledRoute(
                    compile_condition(r.when, state) if r.when is not None else None, r.to
                )
                for r in edge.routes or []
            ]
    outputs: list[str] = []
    for node in spec.nodes:
        outputs.extend(o for o in node.outputs if o not in outputs)
    compiled = CompiledWorkflow(workflow, nodes, routes, plain, outputs)
    from .judges import compile_judges

    compiled.judges = compile_judges(workflow, retry)
    for judge in compiled.judges:
        if judge.spec.in_run and judge.spec.node in nodes:
            nodes[judge.spec.node].gates.append(judge)
    compiled.price_overrides()  # a bad price file is the user's to fix before any call
    check_budget(workflow, compiled.price_overrides())
    if spec.config.observability.mlflow.redact_pii:
        import importlib.util

        from ..exceptions import MissingExtraError

        if importlib.util.find_spec("presidio_analyzer") is None:
            raise MissingExtraError("presidio-analyzer", "pii", "redact_pii")
    return compiled


def check_budget(workflow: LoadedWorkflow, prices: PriceOverrides) -> None:
    """A budget must be able to bound every call: each node's model needs a known price,
    and with ``action: block`` a ``max_tokens`` (the output's worst case). Run by
    ``compile_workflow`` and by ``configurable-agents validate``."""
    from ..exceptions import Issue, WorkflowValidationError
    from ..pricing import PRICE_HINT, price_split
    from ..usage import TokenUsage

    budget = workflow.spec.config.budget
    if not budget.limits:
        return
    doc = workflow.document
    issues: list[Issue] = []
    for i, node in enumerate(workflow.spec.nodes):
        llm = merge_llm(workflow.spec.config.llm, node.llm)
        provider = PROVIDERS[llm.provider or "local"]
        plan = _Plan(llm.model or provider.default_model, provider, llm)
        own = node.llm is not None
        if price_split(plan.model_name, plan.provider.name, TokenUsage(1, 1), prices) is None:
            path: tuple[str | int, ...] = (
                ("nodes", i, "llm", "model")
                if own and node.llm is not None and "model" in node.llm.model_fields_set
                else ("config", "budget")
            )
            issues.append(
                Issue(
                    f"config.budget is set, but node '{node.id}' uses model "
                    f"'{plan.model_name}' (provider {plan.provider.name}), which has no known "
                    "price, so its calls cannot be counted against the budget",
                    doc.file,
                    doc.line_of(path),
                    PRICE_HINT,
                    path,
                )
            )
        if budget.action == "block" and plan.llm.max_tokens is None:
            path = ("nodes", i, "llm") if own else ("config", "llm")
            issues.append(
                Issue(
                    f"config.budget has action: block, but node '{node.id}' sets no max_tokens, "
                    "so the worst case of its calls is unbounded",
                    doc.file,
                    doc.line_of(path) or doc.line_of(("config", "budget")),
                    "set max_tokens under config.llm (or the node's llm:), e.g. max_tokens: 1024",
                    path,
                )
            )
    for i, judge in enumerate(workflow.spec.judges):  # a judge's calls count too
        if judge.kind == "code":
            continue
        llm = merge_llm(workflow.spec.config.llm, judge.llm)
        provider = PROVIDERS[llm.provider or "local"]
        model = llm.model or provider.default_model
        if price_split(model, provider.name, TokenUsage(1, 1), prices) is None:
            path = ("judges", i, "llm") if judge.llm is not None else ("config", "budget")
            issues.append(
                Issue(
                    f"config.budget is set, but judge '{judge.name}' uses model '{model}' "
                    f"(provider {provider.name}), which has no known price, so its calls "
                    "cannot be counted against the budget",
                    doc.file,
                    doc.line_of(path),
                    PRICE_HINT,
                    path,
                )
            )
    if issues:
        raise WorkflowValidationError(issues)

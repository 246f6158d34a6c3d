"""Pydantic models for every section of the workflow file (schema_version "1.0").

These models check the *shape* of the file (keys, value types, ranges). Rules that span
sections (placeholders name state fields, edges name nodes, the graph reaches END, ...) live in
``config.validate``. ``Workflow.model_json_schema()`` is what ``configurable-agents schema``
prints for editors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from .bounds import BOUND_KEYS, applicable
from .types import TYPE_HELP, TypeRef, parse_type

SCHEMA_VERSION = "1.0"
PROVIDERS = ("local", "test", "google", "openai", "anthropic", "ollama")
Provider = Literal["local", "test", "google", "openai", "anthropic", "ollama"]
DEFAULT_PROVIDER = "local"
# Providers whose models can call tools (validation checks nodes with tools against this; each
# provider module's ``INFO.supports_tools`` says the same, a test keeps the two in step).
TOOL_PROVIDERS = frozenset({"test", "google", "openai", "anthropic", "ollama"})
# The GGUF models shipped in packages, selectable by name on ``local`` without ``model_path``
# (``providers.local.BUNDLED`` describes them; a test keeps the two in step). The first is
# the default.
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
# Provider errors worth another attempt (``config.execution.retry.on``).
TransientKind = Literal["rate_limit", "server_error", "timeout", "connection"]
TRANSIENT_KINDS: tuple[TransientKind, ...] = ("rate_limit", "server_error", "timeout", "connection")
# ``{__error__: <kind>}`` in the test provider's canned responses: that call fails so.
TEST_ERRORS = (*TRANSIENT_KINDS, "bad_request")
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
Structured = Literal["auto", "json_schema", "per_field"]
STRUCTURED_HELP = (
    "How typed outputs are asked for: 'json_schema' (one JSON object, grammar-constrained on "
    "local), 'per_field' (one call per output field: str fields as free text, the others as "
    "grammar-constrained JSON), 'auto' (per_field on provider local, json_schema elsewhere)."
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FlowMeta(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="Workflow name.")
    version: str = Field("1.0.0", description="Workflow version, free text.")
    description: str = ""


class LLMConfig(_Section):
    """Model settings; ``config.llm`` for every node, ``nodes[].llm`` to override per node."""

    provider: Provider | None = Field(None, description="Defaults to 'local'.")
    model: str | None = Field(None, description="Model name; for provider 'test' the name priced.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    model_path: str | None = Field(
        None, description="local: any GGUF file instead of the bundled models."
    )
    chat_format: str | None = Field(
        None,
        description="local: llama.cpp chat format (e.g. 'chatml', 'gemma') for GGUF files "
        "without a chat template; default: the template stored in the file.",
    )
    structured: Structured | None = Field(
        None, description=STRUCTURED_HELP + " Default for every node; default 'auto'."
    )
    n_ctx: int | None = Field(None, gt=0, description="local: context window in tokens.")
    n_threads: int | None = Field(None, gt=0, description="local: CPU threads.")
    seed: int | None = Field(None, description="local/openai/ollama: sampling seed.")
    base_url: str | None = Field(None, description="openai/ollama: server address.")
    latency_ms: float | None = Field(
        None, ge=0, description="test: simulated model latency per call, in milliseconds."
    )
    responses: dict[str, list[dict[str, Any]]] | None = Field(
        None, description="test: canned outputs per node id, used in order, the last repeating."
    )


def merge_llm(base: LLMConfig, override: LLMConfig | None) -> LLMConfig:
    """A node's effective LLM settings: its own ``llm`` keys over ``config.llm``."""
    merged = base.model_dump()
    if override is not None:
        merged.update(override.model_dump(exclude_unset=True))
    if (
        override is not None
        and "provider" in override.model_fields_set
        and "model" not in override.model_fields_set
        and override.provider != base.provider
    ):
        merged["model"] = None  # a different provider does not inherit the model name
    merged["provider"] = merged["provider"] or DEFAULT_PROVIDER
    return LLMConfig(**merged)


class BackoffError(ValueError):
    """``backoff`` given as something other than seconds or a mapping."""

    hint = "write seconds, e.g. backoff: 1.5, or backoff: {initial: 1, max: 30, multiplier: 2}"


def _seconds_to_backoff(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        raise BackoffError(
            f"{value!r} is not a backoff: give the seconds before the first retry, or a "
            "mapping {initial, max, multiplier, jitter}"
        )
    return {"initial": value} if isinstance(value, int | float) else value


class BackoffConfig(_Section):
    """Waits between attempts: ``initial`` × ``multiplier`` ** (retry - 1), at most ``max``."""

    initial: float = Field(1.0, ge=0, le=600, description="Seconds before the first retry.")
    max: float = Field(30.0, ge=0, le=3600, description="Longest wait between two attempts.")
    multiplier: float = Field(2.0, ge=1, le=10, description="Growth of the wait per retry.")
    jitter: bool = Field(True, description="Lengthen each wait by up to half, at random.")

    @model_validator(mode="after")
    def _max_covers_initial(self) -> BackoffConfig:
        if self.max < self.initial:
            raise ValueError(
                f"backoff max ({self.max:g} s) is shorter than its initial wait "
                f"({self.initial:g} s); raise max or lower initial"
            )
        return self


class RetryConfig(_Section):
    """Another attempt at a model call that failed with a transient provider error."""

    attempts: int = Field(
        3, ge=1, le=20, description="Tries per model call, the first included (1: never retry)."
    )
    backoff: Annotated[
        BackoffConfig,
        BeforeValidator(_seconds_to_backoff, json_schema_input_type=float | BackoffConfig),
    ] = Field(
        default_factory=BackoffConfig,
        description="Seconds before the first retry, or {initial, max, multiplier, jitter}.",
    )
    on: list[TransientKind] = Field(
        default_factory=lambda: list(TRANSIENT_KINDS),
        description="Errors retried: rate_limit (429), server_error (5xx), timeout, connection.",
    )


class ExecutionConfig(_Section):
    timeout_seconds: float = Field(120, gt=0, description="Default time limit of each node.")
    max_retries: int = Field(2, ge=0, le=20, description="Retries after an invalid output.")
    max_steps: int = Field(25, ge=1, le=10_000, description="Node executions per run (loops).")
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="Retries of model calls after rate limits, 5xx, timeouts, connection errors.",
    )


# Presidio's recognizers that need no NLP model (``redact.entities``); the first ones are the
# default, those the labelled corpus measures (bench/pii) at recall >= 0.98, precision >= 0.9.
PII_DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL")
PII_PATTERN_ENTITIES = (
    *PII_DEFAULT_ENTITIES,
    "US_SSN",
    "PHONE_NUMBER",
    "CRYPTO",
    "DATE_TIME",
    "MAC_ADDRESS",
    "MEDICAL_LICENSE",
    "UK_NHS",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "UUID",
)
# Found by a spaCy NER model only (``redact.spacy_model``).
PII_NER_ENTITIES = ("PERSON", "LOCATION", "NRP", "ORGANIZATION")


class RedactConfig(_Section):
    """What ``redact_pii`` replaces (Microsoft Presidio, see README, Governance)."""

    entities: list[str] = Field(
        default_factory=lambda: list(PII_DEFAULT_ENTITIES),
        description="Presidio entity types to replace; default: those measured reliable.",
    )
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Your own entities: NAME: regex (replaced by <NAME_n>).",
    )
    allow: list[str] = Field(
        default_factory=list, description="Values never replaced (exact matches)."
    )
    spacy_model: str | None = Field(
        None,
        description="An installed spaCy model (e.g. en_core_web_lg) to also find PERSON, "
        "LOCATION, NRP and ORGANIZATION; without one no names are detected.",
    )


class MlflowConfig(_Section):
    """Tier 1: one MLflow trace per run (see README, Observability)."""

    enabled: bool = False
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "configurable_agents"
    async_logging: bool = True
    log_artifacts: bool = True
    artifact_level: Literal["minimal", "standard", "full"] = "standard"
    run_name: str | None = None
    retention_days: int | None = Field(
        None, ge=1, description="Traces and server run records older than this are deleted."
    )
    redact_pii: bool = Field(
        False,
        description="Replace PII with typed placeholders in everything written: traces, "
        "artifacts, spool, OTLP, run records (the model still sees the real text).",
    )
    redact: RedactConfig | None = Field(None, description="Which PII redact_pii replaces.")


class OpenTelemetryConfig(_Section):
    """Tier 2: each run's span tree exported over OTLP/HTTP (see README, Observability)."""

    enabled: bool = False
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="OTLP/HTTP traces URL, signal path included (protobuf is sent).",
    )
    service_name: str = Field(
        "configurable-agents", description="The resource's service.name on every span."
    )
    sampling_rate: float = Field(
        1.0, ge=0, le=1, description="Share of runs exported, decided by trace id (0: none)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent with every export request."
    )
    timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Time limit of one export request, retries included; runs never wait.",
    )


class PrometheusConfig(_Section):
    """Tier 3: Prometheus metrics (the server's /metrics, or a Pushgateway for CLI runs)."""

    enabled: bool = False
    port: int = Field(
        9464, ge=1, le=65535, description="Not used: setting it is an error (serve --port)."
    )
    path: str = Field("/metrics", description="Not used: setting it is an error (/metrics).")
    pushgateway_url: str | None = None


class SpoolConfig(_Section):
    """The durable local spool runs are written to before their traces reach a sink."""

    path: str | None = Field(
        None,
        description="Spool file (default: $CONFIGURABLE_AGENTS_SPOOL, else spool.db in "
        "$CONFIGURABLE_AGENTS_STATE_DIR or ~/.local/state/configurable-agents).",
    )
    max_mb: int = Field(
        512, ge=1, le=1_000_000, description="Size cap; past it the oldest unsent runs drop."
    )


class ObservabilityConfig(_Section):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    opentelemetry: OpenTelemetryConfig = Field(default_factory=OpenTelemetryConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)


class ModelPriceSpec(_Section):
    """USD per million tokens; cached-input prices default to the input price."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cache_read_per_million: float | None = Field(None, ge=0)
    cache_write_per_million: float | None = Field(None, ge=0)


class PricingConfig(_Section):
    file: str | None = Field(
        None, description="YAML/JSON price file (relative to the workflow file)."
    )
    models: dict[str, ModelPriceSpec] = Field(
        default_factory=dict, description="Prices by model name; these win over the file."
    )


class PriceFile(BaseModel):
    models: dict[str, ModelPriceSpec]


class BudgetConfig(_Section):
    """Spend limits in USD, checked before every model call (see README, Governance)."""

    per_run_usd: float | None = Field(None, gt=0, description="Limit of one run.")
    daily_usd: float | None = Field(None, gt=0, description="Limit of one UTC day.")
    monthly_usd: float | None = Field(None, gt=0, description="Limit of one UTC month.")
    alert_threshold: float = Field(
        0.8, gt=0, le=1, description="Share of a limit past which a warning is logged."
    )
    action: Literal["warn", "block"] = Field(
        "warn",
        description="block: a call whose worst case would pass a limit is not made and the "
        "run fails with BudgetExceededError; warn: log and go on.",
    )
    scope: Literal["workflow", "all"] = Field(
        "workflow",
        description="What the daily/monthly limits count: this workflow's spend, or every "
        "workflow's sharing the same spend ledger and store.",
    )

    @property
    def limits(self) -> dict[str, float]:
        """The limits set, by field name."""
        named = {
            "per_run_usd": self.per_run_usd,
            "daily_usd": self.daily_usd,
            "monthly_usd": self.monthly_usd,
        }
        return {k: v for k, v in named.items() if v is not None}


class Config(_Section):
    llm: LLMConfig = Field(default_factory=LLMConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)


def _check_type(value: str) -> str:
    parse_type(value)  # a TypeSyntaxError is a ValueError; pydantic keeps it (and its hint)
    return value


class _Bounds(_Section):
    """Limits of a field's values (``config.bounds``), enforced for every provider."""

    min_items: int | None = Field(None, ge=0, description="list: at least this many items.")
    max_items: int | None = Field(None, ge=1, description="list: at most this many items.")
    min_length: int | None = Field(None, ge=0, description="str: at least this many characters.")
    max_length: int | None = Field(None, ge=1, description="str: at most this many characters.")
    ge: int | float | None = Field(None, description="int, float: the smallest value allowed.")
    le: int | float | None = Field(None, description="int, float: the largest value allowed.")

    def declared_bounds(self) -> dict[str, int | float]:
        """The bounds set on this field, by name."""
        values = {k: getattr(self, k) for k in BOUND_KEYS}
        return {k: v for k, v in values.items() if v is not None}

    def _bounded(self, tref: TypeRef) -> TypeRef:
        # bounds that do not fit the type are validation errors (config.validate); the
        # TypeRef only carries those that apply
        return tref.with_bounds(applicable(tref.kind, self.declared_bounds()))


class _StateFieldKeys(_Section):
    type: str = Field(description=f"One of {TYPE_HELP}.")
    required: bool = False
    default: Any = None
    description: str = ""
    fields: dict[str, StateField] | None = Field(None, description="Nested fields of an object.")

    _check = field_validator("type")(_check_type)


class StateField(_Bounds, _StateFieldKeys):  # this order lists the bounds last
    """A field of the run's state; its bounds limit what inputs and nodes write to it."""

    def type_ref(self) -> TypeRef:
        nested = tuple((k, v.type_ref()) for k, v in (self.fields or {}).items())
        return self._bounded(parse_type(self.type, nested))


class State(_Section):
    fields: dict[str, StateField] = Field(min_length=1)


class _OutputFieldKeys(_Section):
    name: str = Field(pattern=IDENTIFIER)
    type: str = "str"
    description: str = ""
    fields: list[OutputField] | None = None

    _check = field_validator("type")(_check_type)


class OutputField(_Bounds, _OutputFieldKeys):  # this order lists the bounds last
    """A field the model must return; its bounds limit the values it may return."""

    def type_ref(self) -> TypeRef:
        nested = tuple((f.name, f.type_ref()) for f in self.fields or [])
        return self._bounded(parse_type(self.type, nested))


class OutputSchema(_Section):
    type: Literal["object"] = "object"
    fields: list[OutputField] = Field(min_length=1)


class PromptRefError(ValueError):
    """A ``prompt_ref`` that names neither or both of ``version`` and ``alias``."""

    hint = "write prompt_ref: {name: my_prompt, version: 3} or {name: my_prompt, alias: production}"


class NoPromptError(ValueError):
    """A node with neither ``prompt`` nor ``prompt_ref``."""

    hint = (
        'add prompt: "...{field}...", or prompt_ref: {name: my_prompt, version: 1} to load it '
        "from the MLflow Prompt Registry (configurable-agents prompts push registers prompts)"
    )


class PromptRef(_Section):
    """A prompt in the MLflow Prompt Registry of ``observability.mlflow.tracking_uri``."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Registered prompt name (letters, digits, _ . -)."
    )
    version: int | None = Field(None, ge=1, description="A version number; or give alias.")
    alias: str | None = Field(
        None, min_length=1, description="An alias of a version, e.g. production; or version."
    )

    @model_validator(mode="after")
    def _one_of(self) -> PromptRef:
        if (self.version is None) == (self.alias is None):
            raise PromptRefError("a prompt_ref has either 'version: <n>' or 'alias: <name>'")
        return self

    @property
    def uri(self) -> str:
        """MLflow's prompt URI: ``prompts:/name/3`` or ``prompts:/name@alias``."""
        if self.alias is not None:
            return f"prompts:/{self.name}@{self.alias}"
        return f"prompts:/{self.name}/{self.version}"


class Node(_Section):
    id: str = Field(pattern=IDENTIFIER, description="Unique node id (letters, digits, _).")
    description: str = ""
    prompt: str | None = Field(
        None,
        min_length=1,
        description="Template; {field} inserts a state field. With prompt_ref: the fallback "
        "used when the registry cannot be read.",
    )
    prompt_ref: PromptRef | None = Field(
        None,
        description="Load the template from the MLflow Prompt Registry ({{ field }} "
        "placeholders), by version or alias; prompt, if given too, is the fallback.",
    )
    outputs: list[str] = Field(min_length=1, description="State fields this node writes.")
    output_schema: OutputSchema | None = Field(
        None, description="Fields the model must return; defaults to the outputs' state types."
    )
    llm: LLMConfig | None = None
    tools: list[str] = Field(
        default_factory=list, description="Tool names from the registry, or 'module:function'."
    )
    timeout_seconds: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0, le=20)
    structured: Structured | None = Field(
        None, description=STRUCTURED_HELP + " Overrides config.llm.structured for this node."
    )

    @model_validator(mode="after")
    def _has_prompt(self) -> Node:
        if self.prompt is None and self.prompt_ref is None:
            raise NoPromptError(f"node '{self.id}' has neither 'prompt' nor 'prompt_ref'")
        return self


class Route(_Section):
    when: str | None = None
    default: bool = False
    to: str

    @model_validator(mode="after")
    def _one_of(self) -> Route:
        if (self.when is None) == (not self.default):
            raise ValueError("a route has either 'when: <condition>' or 'default: true'")
        return self


class Edge(_Section):
    from_: str = Field(alias="from")
    to: str | None = None
    routes: list[Route] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> Edge:
        if (self.to is None) == (self.routes is None):
            raise ValueError("an edge has either 'to: <node>' or 'routes: [...]'")
        return self


from .judges import Judge  # noqa: E402 - judges.py names LLMConfig, defined above

Judge.model_rebuild(_types_namespace={"LLMConfig": LLMConfig})


class Workflow(_Section):
    """A whole workflow file."""

    schema_version: str = Field(description=f'Always "{SCHEMA_VERSION}".')
    flow: FlowMeta
    config: Config = Field(default_factory=Config)
    state: State
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(min_length=1)
    judges: list[Judge] = Field(
        default_factory=list,
        description="Quality checks of node outputs or final outputs (LLM, MLflow or code).",
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        if str(value) != SCHEMA_VERSION:
            raise ValueError(
                f'schema_version {value!r} is not supported; this version reads "{SCHEMA_VERSION}"'
            )
        return SCHEMA_VERSION

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow file, for editors (``configurable-agents schema``)."""
    schema = Workflow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "configurable-agents workflow"
    return schema

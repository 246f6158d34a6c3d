"""Prices of model calls, from provider-reported token usage (low in the tree: the config,
compile, run and observe layers all price with it).

Each chat-model call is priced on its own with ``genai-prices`` (cached-input tokens too when
the provider reports them), unless the workflow's ``config.pricing`` (inline ``models`` or a
price ``file``) or the ``CONFIGURABLE_AGENTS_PRICES`` file names the model; those win. Node,
model and run totals are sums of the calls, so a trace's totals always equal its spans.

Pricing never fails a run: ``local`` and ``ollama`` models cost $0 ("local model"), the
``test`` provider is priced by its ``model`` name (a dry run of that model), and a model with
no known price costs $0 and is listed in ``CostSummary.unpriced`` so callers say so once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from .exceptions import Issue, WorkflowValidationError
from .usage import TokenUsage

log = logging.getLogger(__name__)

LOCAL_PROVIDERS = {"local": "local model", "ollama": "local model (Ollama)"}
# Providers whose names genai-prices knows; others are matched by model name alone.
_PRICE_PROVIDER = {"google": "google", "openai": "openai", "anthropic": "anthropic"}
PRICES_ENV = "CONFIGURABLE_AGENTS_PRICES"
PRICE_HINT = (
    "add it under config.pricing.models in the workflow file, e.g. "
    "'my-model: {input_per_million: 0.5, output_per_million: 1.5}', or in a price file "
    f"named by config.pricing.file or ${PRICES_ENV}"
)
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. Cached-input prices default to the input price."""

    input_per_million: Decimal
    output_per_million: Decimal
    cache_read_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None

    def price(self, usage: TokenUsage) -> tuple[Decimal, Decimal]:
        """(input cost, output cost) in USD."""
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        fresh = max(usage.input_tokens - cache_read - cache_write, 0)
        read = self.cache_read_per_million
        write = self.cache_write_per_million
        inputs = (
            fresh * self.input_per_million
            + cache_read * (self.input_per_million if read is None else read)
            + cache_write * (self.input_per_million if write is None else write)
        )
        return inputs / _MILLION, usage.output_tokens * self.output_per_million / _MILLION

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ModelPrice:
        def dec(key: str) -> Decimal | None:
            value = data.get(key)
            return None if value is None else Decimal(str(value))

        return cls(
            input_per_million=dec("input_per_million") or Decimal(0),
            output_per_million=dec("output_per_million") or Decimal(0),
            cache_read_per_million=dec("cache_read_per_million"),
            cache_write_per_million=dec("cache_write_per_million"),
        )


PriceOverrides = dict[str, ModelPrice]


def load_price_file(path: str | Path) -> PriceOverrides:
    """Read a price file: YAML or JSON, ``models: {name: {input_per_million: ...}}``."""
    from pydantic import ValidationError

    from .config.schema import PriceFile

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowValidationError(
            [Issue(f"cannot read the price file: {exc}", str(path), None, "check the path")]
        ) from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            from ruamel.yaml import YAML

            data = YAML(typ="safe").load(text)
        parsed = PriceFile.model_validate(data)
    except (ValueError, ValidationError, Exception) as exc:
        raise WorkflowValidationError(
            [
                Issue(
                    f"invalid price file: {exc}",
                    str(path),
                    None,
                    "write 'models: {name: {input_per_million: N, output_per_million: N}}'",
                )
            ]
        ) from exc
    return {name: ModelPrice.from_mapping(p.model_dump()) for name, p in parsed.models.items()}


def env_price_overrides() -> PriceOverrides:
    path = os.environ.get(PRICES_ENV)
    return load_price_file(path) if path else {}


@lru_cache(maxsize=256)
def _library_price(model: str, provider: str) -> Any:
    """genai-prices' price entry for a model, or None when it does not know the model."""
    from genai_prices import Usage, calc_price

    try:
        return calc_price(
            Usage(input_tokens=1, output_tokens=1), model, provider_id=_PRICE_PROVIDER.get(provider)
        ).model_price
    except LookupError:
        return None


def price_usage(
    model: str,
    provider: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    overrides: PriceOverrides | None = None,
) -> Decimal | None:
    """The price of one call in USD, ``Decimal(0)`` for local models, ``None`` if unknown."""
    usage = TokenUsage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
    split = price_split(model, provider, usage, overrides)
    return None if split is None else split[0] + split[1]


_ZERO = (Decimal(0), Decimal(0))


def price_split(
    model: str, provider: str, usage: TokenUsage, overrides: PriceOverrides | None = None
) -> tuple[Decimal, Decimal] | None:
    """(input cost, output cost) of one call in USD; ``None`` when no price is known."""
    if overrides and model in overrides:
        return overrides[model].price(usage)
    if provider in LOCAL_PROVIDERS:
        return _ZERO
    if not usage.input_tokens and not usage.output_tokens:
        return _ZERO
    try:
        entry = _library_price(model, provider)
        if entry is None:
            return None
        from genai_prices import Usage

        price = entry.calc_price(
            Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens or None,
                cache_write_tokens=usage.cache_write_tokens or None,
            )
        )
        return Decimal(price["input_price"]), Decimal(price["output_price"])
    except Exception:
        log.warning("pricing model %r failed; counting it as $0", model, exc_info=True)
        return None


@dataclass
class ModelCost:
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    note: str | None = None  # "local model", "no price known", ...


@dataclass
class CostSummary:
    total_usd: float = 0.0
    by_model: dict[str, ModelCost] = field(default_factory=dict)
    by_node: dict[str, float] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "total_usd": self.total_usd,
            "by_model": {
                name: {
                    "provider": m.provider,
                    "calls": m.calls,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cache_read_tokens": m.cache_read_tokens,
                    "cost_usd": m.cost_usd,
                    "note": m.note,
                }
                for name, m in self.by_model.items()
            },
            "by_node": dict(self.by_node),
            "unpriced": self.unpriced,
        }

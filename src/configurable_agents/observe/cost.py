"""Cost of a run from provider-reported token usage, priced with ``genai-prices``.

Pricing never fails a run: ``local`` and ``ollama`` models cost $0 (they run on your machine),
the ``test`` provider is priced by its ``model`` name (a dry run of that model), and a model
``genai-prices`` does not know costs $0 and is listed in ``CostSummary.unpriced`` so callers
can say so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run.result import RunResult

log = logging.getLogger(__name__)

LOCAL_PROVIDERS = {"local": "local model", "ollama": "local model (Ollama)"}
# Providers whose names genai-prices knows; others are matched by model name alone.
_PRICE_PROVIDER = {"google": "google", "openai": "openai", "anthropic": "anthropic"}


@dataclass
class ModelCost:
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
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
            "total_usd": round(self.total_usd, 8),
            "by_model": {
                name: {
                    "provider": m.provider,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cost_usd": round(m.cost_usd, 8),
                    "note": m.note,
                }
                for name, m in self.by_model.items()
            },
            "by_node": {k: round(v, 8) for k, v in self.by_node.items()},
            "unpriced": self.unpriced,
        }


def price_usage(model: str, provider: str, input_tokens: int, output_tokens: int) -> Decimal | None:
    """The list price of one call in USD, ``Decimal(0)`` for local models, ``None`` if unknown."""
    if provider in LOCAL_PROVIDERS:
        return Decimal(0)
    if not input_tokens and not output_tokens:
        return Decimal(0)
    try:
        from genai_prices import Usage, calc_price

        result = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model,
            provider_id=_PRICE_PROVIDER.get(provider),
        )
    except LookupError:
        return None
    except Exception:
        log.warning("pricing model %r failed", model, exc_info=True)
        return None
    return result.total_price


def summarize_cost(result: RunResult) -> CostSummary:
    """Cost per model and per node of a finished run (calls priced one by one, then summed)."""
    summary = CostSummary()
    unknown: set[str] = set()
    for node in result.nodes:
        entry = summary.by_model.setdefault(node.model, ModelCost(node.model, node.provider))
        entry.input_tokens += node.usage.input_tokens
        entry.output_tokens += node.usage.output_tokens
        price = price_usage(
            node.model, node.provider, node.usage.input_tokens, node.usage.output_tokens
        )
        if node.provider in LOCAL_PROVIDERS:
            entry.note = LOCAL_PROVIDERS[node.provider]
        elif price is None:
            entry.note = "no price known"
            if node.provider != "test" or node.model != "test":
                unknown.add(node.model)
        cost = float(price or 0)
        entry.cost_usd += cost
        summary.by_node[node.node] = summary.by_node.get(node.node, 0.0) + cost
        summary.total_usd += cost
    summary.unpriced = sorted(unknown)
    return summary

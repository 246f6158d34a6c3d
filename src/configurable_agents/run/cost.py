"""Price a finished run call by call: ``cost_usd`` on every call and node, and
``RunResult.cost`` (a ``CostSummary``). Totals are sums of the calls, so a trace's totals
always equal its spans."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import TYPE_CHECKING

from ..pricing import _ZERO, LOCAL_PROVIDERS, CostSummary, ModelCost, PriceOverrides, price_split
from ..usage import TokenUsage

if TYPE_CHECKING:
    from .result import RunResult

_price_lock = threading.Lock()


def summarize_cost(result: RunResult, overrides: PriceOverrides | None = None) -> CostSummary:
    """Price every call of a finished run (with the workflow's ``config.pricing`` unless
    ``overrides`` are given); set ``cost_usd`` on calls and nodes and ``result.cost``.
    Idempotent: a run already priced returns its summary."""
    with _price_lock:
        if result.cost is not None:
            return result.cost
        summary = _summarize(result, result.prices if overrides is None else overrides, True)
        result.cost = summary
        return summary


def peek_cost(result: RunResult) -> CostSummary:
    """The run's ``CostSummary`` without writing anything on it: for readers in other threads
    (metrics) that must not change a record its caller already holds."""
    if result.cost is not None:
        return result.cost
    return _summarize(result, result.prices, False)


def _summarize(result: RunResult, overrides: PriceOverrides | None, write: bool) -> CostSummary:

    summary = CostSummary()
    unknown: set[str] = set()
    total = Decimal(0)
    by_node: dict[str, Decimal] = {}
    by_model: dict[str, Decimal] = {}

    def charge(model: str, provider: str, usage: TokenUsage) -> tuple[Decimal, Decimal]:
        entry = summary.by_model.setdefault(model, ModelCost(model, provider))
        entry.input_tokens += usage.input_tokens
        entry.output_tokens += usage.output_tokens
        entry.cache_read_tokens += usage.cache_read_tokens
        entry.calls += 1
        price = price_split(model, provider, usage, overrides)
        if overrides and model in overrides:
            entry.note = "price from config.pricing"
        elif provider in LOCAL_PROVIDERS:
            entry.note = LOCAL_PROVIDERS[provider]
        elif price is None:
            entry.note = "no price known"
            if provider != "test" or model != "test":
                unknown.add(model)
        split = price or _ZERO
        by_model[model] = by_model.get(model, Decimal(0)) + split[0] + split[1]
        return split

    for node in result.nodes:
        node_cost = Decimal(0)
        if node.calls:
            for call in node.calls:
                model = call.model or node.model
                split = charge(model, call.provider or node.provider, call.usage)
                if write:
                    call.input_cost_usd, call.output_cost_usd = float(split[0]), float(split[1])
                    call.cost_usd = call.input_cost_usd + call.output_cost_usd
                node_cost += split[0] + split[1]
        elif node.usage.total_tokens:  # records made without per-call detail
            split = charge(node.model, node.provider, node.usage)
            node_cost = split[0] + split[1]
        if write:
            node.cost_usd = float(node_cost)
        by_node[node.node] = by_node.get(node.node, Decimal(0)) + node_cost
        total += node_cost
    for verdict in getattr(result, "judges", None) or []:  # judges' own calls, apart
        record = verdict.record
        if record is None:
            continue
        judge_cost = Decimal(0)
        for call in record.calls:
            split = charge(call.model or record.model, call.provider or record.provider, call.usage)
            call.input_cost_usd, call.output_cost_usd = float(split[0]), float(split[1])
            call.cost_usd = call.input_cost_usd + call.output_cost_usd
            judge_cost += split[0] + split[1]
        record.cost_usd = verdict.cost_usd = float(judge_cost)
        key = f"judge:{verdict.name}"
        by_node[key] = by_node.get(key, Decimal(0)) + judge_cost
        total += judge_cost
    summary.total_usd = float(total)
    summary.by_node = {k: float(v) for k, v in by_node.items()}
    for name, value in by_model.items():
        summary.by_model[name].cost_usd = float(value)
    summary.unpriced = sorted(unknown)
    return summary

"""Observability: what runs cost (``cost``); tracing and metrics exporters arrive here too."""

from .cost import CostSummary, ModelCost, price_usage, summarize_cost

__all__ = ["CostSummary", "ModelCost", "price_usage", "summarize_cost"]

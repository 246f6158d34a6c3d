"""Tier 3: Prometheus metrics (``registry``), their alert rules (``alerts``) and Grafana
dashboards (``dashboards``)."""

from __future__ import annotations

from .recorder import Metrics, enable, enabled, metrics, registry

__all__ = ["Metrics", "enable", "enabled", "metrics", "registry"]

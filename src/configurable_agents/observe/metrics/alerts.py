"""Tier 3: the Prometheus alert rules, shipped as ``observe/metrics/prometheus/rules.yml``.

The rules file holds recording rules over the metrics of ``observe.metrics`` (run rate, error
ratio, p50/p95 run time, p95 node time, token rate, hourly spend and its daily baseline) and
three alerts:

================  ========  ==================================================================
alert             severity  fires when (defaults)
================  ========  ==================================================================
``HighLatency``   warning   a workflow's 5-minute p95 run time is over 30 s for 10 minutes
``HighErrorRate`` critical  over 5 % of a workflow's runs of the last 5 minutes failed, for
                            10 minutes
``CostSpike``     warning   the LLM spend of the last hour is over 5 USD/hour, or 3 times its
                            baseline (the 24 hours before) and over 0.5 USD/hour, for 15 minutes
================  ========  ==================================================================

Each threshold is a recording rule of its own (``vector(30)`` ...), so the alerts, their
annotations and the dashboards read it from one place. ``rules_text(AlertThresholds(...))``
gives the file with other values; ``configurable-agents deploy`` writes it into the bundle.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ALERTS",
    "THRESHOLD_RECORDS",
    "AlertThresholds",
    "rules_text",
    "write_rules",
]

ALERTS = ("HighLatency", "HighErrorRate", "CostSpike")

# AlertThresholds field -> the recording rule that holds its value in rules.yml.
THRESHOLD_RECORDS = {
    "latency_p95_seconds": "configurable_agents:high_latency:p95_seconds_threshold",
    "error_ratio": "configurable_agents:high_error_rate:ratio_threshold",
    "cost_usd_per_hour": "configurable_agents:cost:usd_per_hour_ceiling",
    "cost_spike_factor": "configurable_agents:cost_spike:factor",
    "cost_spike_min_usd_per_hour": "configurable_agents:cost_spike:min_usd_per_hour",
}


@dataclass(frozen=True)
class AlertThresholds:
    """Alert thresholds; the defaults are the values in the packaged ``rules.yml``."""

    latency_p95_seconds: float = 30.0
    """HighLatency: a workflow's 5-minute p95 run time above this many seconds."""
    error_ratio: float = 0.05
    """HighErrorRate: failed runs / finished runs over 5 minutes above this (0-1)."""
    cost_usd_per_hour: float = 5.0
    """CostSpike: LLM spend over the last hour above this many USD per hour."""
    cost_spike_factor: float = 3.0
    """CostSpike: spend of the last hour above this multiple of the day before's average..."""
    cost_spike_min_usd_per_hour: float = 0.5
    """...and above this many USD per hour (smaller spikes are not worth an alert)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, not {value!r}")
        if self.error_ratio > 1:
            raise ValueError(f"error_ratio is a fraction of runs (0-1), not {self.error_ratio}")


def _packaged() -> str:
    return (
        resources.files("configurable_agents.observe.metrics")
        .joinpath("prometheus", "rules.yml")
        .read_text(encoding="utf-8")
    )


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def rules_text(thresholds: AlertThresholds | None = None) -> str:
    """The rules file, with ``thresholds`` written into its threshold records.

    Without thresholds (or with the defaults) it is the packaged file byte for byte;
    otherwise the same file, comments kept, with the changed ``vector(...)`` values.
    """
    text = _packaged()
    if thresholds is None or thresholds == AlertThresholds():
        return text
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and block scalars stay as they are
    yaml.width = 4096
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc: Any = yaml.load(text)
    wanted = {THRESHOLD_RECORDS[f.name]: getattr(thresholds, f.name) for f in fields(thresholds)}
    found = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            record = rule.get("record")
            if record in wanted:
                rule["expr"] = f"vector({_number(wanted[record])})"
                found.add(record)
    missing = set(wanted) - found
    if missing:  # the packaged file and THRESHOLD_RECORDS disagree: a bug here
        raise RuntimeError(f"rules.yml has no threshold record {sorted(missing)}")
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def write_rules(path: str | Path, thresholds: AlertThresholds | None = None) -> Path:
    """Write the rules file to ``path`` (parent folders are created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rules_text(thresholds), encoding="utf-8")
    return target

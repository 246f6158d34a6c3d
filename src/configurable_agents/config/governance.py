"""Checks of the governance settings that the schema's shapes cannot express: ``redact:``
(entity names, regexes) and settings that would otherwise be dead config."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .schema import PII_NER_ENTITIES, PII_PATTERN_ENTITIES, Workflow

if TYPE_CHECKING:
    from .collector import Collector


def check_governance(col: Collector, spec: Workflow) -> None:
    check_provider_options(col, spec)
    check_prometheus(col, spec)
    mlflow = spec.config.observability.mlflow
    redact = mlflow.redact
    base = ("config", "observability", "mlflow", "redact")
    if redact is None:
        return
    if not mlflow.redact_pii:
        col.add(
            base,
            "redact: is set, but redact_pii is false, so nothing is redacted",
            "set redact_pii: true next to it (or remove redact:)",
        )
    known = PII_PATTERN_ENTITIES + (PII_NER_ENTITIES if redact.spacy_model else ())
    for i, entity in enumerate(redact.entities):
        if entity in known:
            continue
        if entity in PII_NER_ENTITIES:
            hint = (
                f"{entity} is found by a spaCy NER model: install one (e.g. "
                "python -m spacy download en_core_web_lg) and set redact.spacy_model"
            )
        else:
            import difflib

            close = difflib.get_close_matches(entity.upper(), known, n=1)
            hint = (f"did you mean '{close[0]}'? " if close else "") + (
                "known entities: " + ", ".join(known) + "; or add your own under redact.patterns"
            )
        col.add((*base, "entities", i), f"redact.entities: unknown entity {entity!r}", hint)
    for name, regex in redact.patterns.items():
        path = (*base, "patterns", name)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            col.add(path, f"redact.patterns: {name!r} is not a name", "use letters, digits, _")
        try:
            re.compile(regex)
        except re.error as exc:
            col.add(
                path,
                f"redact.patterns.{name}: invalid regular expression: {exc}",
                "fix the regex (YAML: quote it with single quotes so backslashes stay)",
            )


# Which providers read each provider-specific ``llm`` option (their ``create`` functions).
# The ``test`` provider stands in for any other (a dry run of a priced model), so it accepts
# every option; the others reject what they would silently ignore.
PROVIDER_OPTIONS: dict[str, frozenset[str]] = {
    "model_path": frozenset({"local"}),
    "chat_format": frozenset({"local"}),
    "n_ctx": frozenset({"local"}),
    "n_threads": frozenset({"local"}),
    "seed": frozenset({"local", "openai", "ollama"}),
    "base_url": frozenset({"openai", "ollama"}),
    "latency_ms": frozenset({"test"}),
    "responses": frozenset({"test"}),
}


def check_provider_options(col: Collector, spec: Workflow) -> None:
    """A provider option set where the node's provider ignores it is an error (no dead
    config), reported where it is written."""
    from .schema import DEFAULT_PROVIDER, merge_llm

    for i, node in enumerate(spec.nodes):
        llm = merge_llm(spec.config.llm, node.llm)
        provider = llm.provider or DEFAULT_PROVIDER
        if provider == "test":
            continue
        for option, readers in PROVIDER_OPTIONS.items():
            if getattr(llm, option) is None or provider in readers:
                continue
            own = node.llm is not None and option in node.llm.model_fields_set
            path = ("nodes", i, "llm", option) if own else ("config", "llm", option)
            where = f"nodes[{i}].llm" if own else "config.llm"
            col.add(
                path,
                f"node '{node.id}' uses provider '{provider}', which ignores {option} "
                f"(set in {where})",
                f"{option} is read by provider {', '.join(sorted(readers))} only: remove it, "
                "or set it in the llm: of the nodes that use " + " or ".join(sorted(readers)),
            )


def check_prometheus(col: Collector, spec: Workflow) -> None:
    """``prometheus.port`` / ``path``: metrics are served by ``configurable-agents serve`` on
    its own port at ``/metrics`` (CLI runs push to ``pushgateway_url``); nothing reads these."""
    prometheus = spec.config.observability.prometheus
    for option in ("port", "path"):
        if option in prometheus.model_fields_set:
            col.add(
                ("config", "observability", "prometheus", option),
                f"observability.prometheus.{option} is not used: the server exposes /metrics "
                "on its own --port, and CLI runs push to pushgateway_url",
                f"remove {option}; to move the metrics, run configurable-agents serve --port N",
            )

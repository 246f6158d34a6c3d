"""Checks of the governance settings that the schema's shapes cannot express: ``redact:``
(entity names, regexes) and settings that would otherwise be dead config."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .schema import PII_NER_ENTITIES, PII_PATTERN_ENTITIES, Workflow

if TYPE_CHECKING:
    from .validate import _Collector


def check_governance(col: _Collector, spec: Workflow) -> None:
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

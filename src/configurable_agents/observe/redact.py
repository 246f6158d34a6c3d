"""PII redaction (``observability.mlflow.redact_pii`` and ``redact:``) with Microsoft Presidio.

The analyzer runs with Presidio's model-free NLP engine (``no_op``): pattern, checksum and
context recognizers (emails, credit cards with the Luhn check, IBANs with their checksum, IP
addresses, US SSNs, ...), plus the workflow's own ``redact.patterns``. Names and places need a
spaCy NER model: ``redact.spacy_model`` names an installed one (none is by default, so names
are not found). Each value found is replaced by a typed placeholder, numbered per run:
``<EMAIL_ADDRESS_1>``, the same value always the same placeholder in one run, so a trace stays
readable.

What is redacted: every string of the run as the spool keeps it (inputs, state, outputs,
prompts, every message sent and received, tool arguments and results, errors) and the run's
tags, before the record is written to the spool, so nothing downstream (MLflow spans, trace
inputs/outputs, artifacts, ``cost_summary.json``, OTLP attributes) sees a raw value; and the
server's run records before they are stored. Names (workflow, nodes, models, ids) are kept.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..exceptions import MissingExtraError

if TYPE_CHECKING:
    from ..config.schema import MlflowConfig, RedactConfig

# Fields that name things rather than carry content: never redacted.
_KEEP = frozenset(
    {
        "workflow",
        "node",
        "model",
        "provider",
        "kind",
        "status",
        "run_id",
        "trace_id",
        "trace_uri",
        "type",
        "name",
        "id",
        "workflow_version",
        "created_at",
        "started_at",
        "finished_at",
        "transient_error",
    }
)


_MASTERCARD_2 = r"\b2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b"


def _offline_tldextract() -> None:
    """Presidio's email recognizer asks ``tldextract``, which fetches the public suffix list
    over the network by default; use the snapshot it ships instead."""
    try:
        import tldextract
        import tldextract.tldextract as module
    except ImportError:  # pragma: no cover - a dependency of presidio-analyzer
        return
    if getattr(module.TLD_EXTRACTOR, "suffix_list_urls", ()) != ():
        module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())


class Engine:
    """Presidio's analyzer and anonymizer for one ``redact:`` configuration (shared, thread
    safe: Presidio keeps no per-call state)."""

    def __init__(
        self,
        entities: tuple[str, ...],
        patterns: tuple[tuple[str, str], ...],
        allow: tuple[str, ...],
        spacy_model: str | None,
    ) -> None:
        try:
            from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
            from presidio_analyzer.nlp_engine import NlpEngineProvider
            from presidio_anonymizer import AnonymizerEngine
        except ImportError as exc:
            raise MissingExtraError("presidio-analyzer", "pii", "redact_pii") from exc
        _offline_tldextract()
        if spacy_model:
            config = {
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": spacy_model}],
            }
        else:
            config = {
                "nlp_engine_name": "no_op",
                "models": [{"lang_code": "en", "model_name": "no_op"}],
            }
        nlp = NlpEngineProvider(nlp_configuration=config).create_engine()
        self.analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
        from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

        # Mastercard's 2-series (2221-2720), which Presidio's pattern does not know; the
        # recognizer still requires the Luhn check.
        self.analyzer.registry.add_recognizer(
            CreditCardRecognizer(
                patterns=[Pattern("mastercard_2_series", _MASTERCARD_2, 0.3)],
                name="MastercardTwoSeriesRecognizer",
            )
        )
        for name, regex in patterns:
            entity = name.upper()
            self.analyzer.registry.add_recognizer(
                PatternRecognizer(
                    supported_entity=entity,
                    name=f"custom_{entity}",
                    patterns=[Pattern(name=entity, regex=regex, score=1.0)],
                )
            )
        self.entities = [*entities, *(name.upper() for name, _ in patterns)]
        self.allow = list(allow)
        self.anonymizer = AnonymizerEngine()

    def find(self, text: str) -> list[Any]:
        """What Presidio finds, less the matches inside a longer one (the digits of an IBAN
        that pass for a card, the domain of an email address that passes for a URL)."""
        found = self.analyzer.analyze(text=text, language="en", entities=self.entities)
        kept = [
            r
            for r in found
            if not any(
                o is not r
                and o.start <= r.start
                and o.end >= r.end
                and (o.end - o.start) > (r.end - r.start)
                for o in found
            )
        ]
        # the allow list after that: the domain of an allowed address is not a URL to replace
        return [r for r in kept if text[r.start : r.end] not in self.allow]


@lru_cache(maxsize=16)
def _engine(
    entities: tuple[str, ...],
    patterns: tuple[tuple[str, str], ...],
    allow: tuple[str, ...],
    spacy_model: str | None,
) -> Engine:
    return Engine(entities, patterns, allow, spacy_model)


def engine_for(config: RedactConfig | None) -> Engine:
    from ..config.schema import RedactConfig

    config = config or RedactConfig()
    return _engine(
        tuple(config.entities),
        tuple(sorted(config.patterns.items())),
        tuple(config.allow),
        config.spacy_model,
    )


def redaction_on(mlflow: MlflowConfig) -> bool:
    return bool(mlflow.redact_pii)


class Session:
    """The placeholders of one run: the same value, the same placeholder."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._numbers: dict[tuple[str, str], int] = {}
        self._counts: dict[str, int] = {}
        self._done: dict[str, str] = {}
        self._lock = threading.Lock()

    def placeholder(self, entity: str, value: str) -> str:
        with self._lock:
            key = (entity, value)
            number = self._numbers.get(key)
            if number is None:
                number = self._counts.get(entity, 0) + 1
                self._counts[entity] = number
                self._numbers[key] = number
        return f"<{entity}_{number}>"

    def text(self, text: str) -> str:
        if len(text) < 5:
            return text
        done = self._done.get(text)
        if done is not None:
            return done
        found = self.engine.find(text)
        if not found:
            self._done[text] = text
            return text
        from presidio_anonymizer.entities import OperatorConfig

        operators = {
            entity: OperatorConfig(
                "custom", {"lambda": lambda value, e=entity: self.placeholder(e, value)}
            )
            for entity in {r.entity_type for r in found}
        }
        out = self.engine.anonymizer.anonymize(
            text=text, analyzer_results=found, operators=operators
        ).text
        self._done[text] = out
        return str(out)

    def value(self, value: Any, field_name: str | None = None) -> Any:
        """``value`` with every string redacted (dataclasses, mappings and sequences walked;
        keys and naming fields kept)."""
        if field_name in _KEEP:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):  # user content (state, outputs, tags): keys kept
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self.value(v) for v in value]
            return items if isinstance(value, list) else tuple(items)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self.value(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value)
                if f.init
            }
            return dataclasses.replace(value, **changes)
        if hasattr(value, "content") and hasattr(value, "model_copy"):  # a LangChain message
            return value.model_copy(update={"content": self.value(value.content)})
        return value


def redact_record(record: dict[str, Any], config: RedactConfig | None) -> dict[str, Any]:
    """A server run record with its content redacted (one session per record)."""
    session = Session(engine_for(config))
    return {k: v if k in _KEEP else session.value(v) for k, v in record.items()}


log = logging.getLogger("configurable_agents.observe")


class Background:
    """Redaction off the caller's path: a run's record is redacted, then appended to the
    spool, on this thread. The raw record is only ever in memory; at exit (and on
    ``flush()``) the queue is worked off first. A process killed in between loses that trace
    (never leaks it)."""

    def __init__(self, name: str = "configurable-agents-redact") -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
                atexit.register(self.flush, 60.0)
            self._pending += 1
        self._queue.put(job)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - observability never fails a run
                log.warning(
                    "a redacted trace could not be spooled: %s: %s", type(exc).__name__, exc
                )
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

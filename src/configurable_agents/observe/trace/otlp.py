"""The OTLP sink: spooled runs exported as OpenTelemetry spans through the SDK.

Per record the drainer hands us, the run is priced (``run.cost.summarize_cost``), its span tree
built (``spans.build_trace``) and converted (``otlp_spans.to_otel_spans``). A run that came with
a caller's W3C ``traceparent`` (``record.data["parent"]``) is in the caller's trace: its root
span's parent is the caller's (remote) span. Otherwise the trace id is the run id.

Sampling is the SDK's: ``ParentBased(TraceIdRatioBased(rate))`` when the workflow file sets
``sampling_rate``, else the sampler the SDK builds from ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``); the detached drainer inherits
the environment of the process that spooled the run. It is decided once per trace, for the
root span; a trace the sampler drops is done (nothing to send) and counted (``sampled_out``).

Export goes through the SDK's ``BatchSpanProcessor`` and ``OTLPSpanExporter`` (OTLP/HTTP,
protobuf; compression, certificates and the like from the standard ``OTEL_EXPORTER_OTLP_*``
variables as the SDK reads them). The exporter is wrapped so that we know, per export call,
which spans the endpoint took: after a batch's spans are handed to the processor it is
flushed, and a record is ``delivered`` (deleted from the spool) only when every one of its
spans was in an export that returned ``SUCCESS``; the others are ``failed`` (retried later)
with the reason: how the exporter's last HTTP request ended (``connection refused``, ``HTTP
503 Service Unavailable``, ``no answer within 10 s``), else its log lines (which are kept off
the terminal), secrets scrubbed. Once one export of a batch failed, the rest of that batch
fails at once instead of waiting out the timeout again. Delivery is at least once: a record
whose spans were split over two requests of which one failed is sent again whole.

Endpoint, headers and timeout are the target's (``trace.otlp_target``: the file's settings,
else the ``OTEL_EXPORTER_OTLP_*`` variables); headers the SDK would add from
``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` are not sent when the file sets its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...exceptions import MissingExtraError
from .otlp_spans import (
    DEFAULT_SERVICE_NAME,
    EXTRA,
    PACKAGE,
    otel_trace_id,
    parent_context,
    to_otel_spans,
)
from .spool import SpoolRecord
from .targets import mask_url, scrub, url_secrets

if TYPE_CHECKING:
    import requests
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import Sampler

    from .drain import WriteResult
    from .spans import TraceRecord

DEFAULT_TIMEOUT = 10.0  # seconds per export request, retries included (the SDK's default)
MAX_QUEUE = 8192  # spans the processor holds; a spool batch (500 runs x ~5 spans) fits
MAX_EXPORT_BATCH = 1024  # spans per OTLP request
SCHEDULE_DELAY_MS = 60_000  # the sink flushes each batch itself; the timer rarely fires
NOT_EXPORTED = "the span was not exported (the exporter never reported it)"
# Where the SDK's OTLP/HTTP exporter logs its failures (1.25 ... 1.45).
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.common.http",
)
HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
SpanKey = tuple[int, int]  # (trace id, span id)


def sampler_for(rate: float | None) -> Sampler:
    """``ParentBased(TraceIdRatioBased(rate))`` for a rate the workflow file sets; else the
    SDK's sampler from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``."""
    from opentelemetry.sdk.trace import sampling

    if rate is not None:
        return sampling.ParentBased(sampling.TraceIdRatioBased(float(rate)))
    from_env = getattr(sampling, "_get_from_env_or_default", None)
    if from_env is not None:
        found: Sampler = from_env()
        return found
    from opentelemetry.sdk.trace import TracerProvider  # the public way, if that one goes

    return TracerProvider(shutdown_on_exit=False).sampler


# --------------------------------------------------------------------------- exporter logs


class _Capture(logging.Filter):
    """Takes the exporter's log records from the threads that export for us (they become
    the reason of a failed delivery) and keeps them off the terminal.

    So that the reasons are there even where ``opentelemetry`` logging is turned down (the
    detached drainer sets it to CRITICAL), the exporter's loggers that inherit their level
    are set to WARNING; their records from other threads still pass only at the level they
    would have inherited."""

    def __init__(self) -> None:
        super().__init__()
        self.by_thread: dict[int, list[str]] = {}
        self.inherit: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        lines = self.by_thread.get(record.thread or 0)
        if lines is None:
            if record.name in self.inherit:
                return record.levelno >= self._inherited_level(record.name)
            return True
        with contextlib.suppress(Exception):
            lines.append(record.getMessage())
        return False

    def _inherited_level(self, name: str) -> int:
        """The level the logger would have without the ones we set."""
        logger = logging.getLogger(name).parent
        while logger is not None:
            if logger.name not in self.inherit and logger.level != logging.NOTSET:
                return logger.level
            logger = logger.parent
        return logging.WARNING


_capture = _Capture()
_installed = False
_install_lock = threading.Lock()


def _install_capture() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        for name in EXPORTER_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                _capture.inherit.add(name)
                logger.setLevel(logging.WARNING)
            logger.addFilter(_capture)
        _installed = True


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The exporter's log lines of this thread while in the block (not printed)."""
    _install_capture()
    ident = threading.get_ident()
    lines: list[str] = []
    outer = _capture.by_thread.get(ident)
    _capture.by_thread[ident] = lines
    try:
        yield lines
    finally:
        if outer is None:
            _capture.by_thread.pop(ident, None)
        else:
            _capture.by_thread[ident] = outer
            outer.extend(lines)


def failure_reason(lines: Sequence[str], timeout: float) -> str:
    """Why an export failed, in a few words, from the exporter's log lines."""
    text = " ".join(lines)
    if "connection refused" in text.lower():
        return "connection refused"
    status = re.search(r"code: (\d{3}), reason: ([^,]*)", text)
    if status:
        return f"HTTP {status.group(1)} {status.group(2)}".strip()
    transient = re.search(r"Transient error (.{1,300}?) encountered", text)
    if transient:
        detail = transient.group(1)
        if "timed out" in detail.lower():
            return f"no answer within {timeout:g} s"
        return f"{detail}; gave up after {timeout:g} s"
    if lines:
        return lines[-1][:300]
    return "the OTLP exporter reported a failure"


class RecordingExporter:  # a SpanExporter, not subclassed: the SDK is an optional extra
    """An ``OTLPSpanExporter`` that remembers, per span, whether the export that carried it
    succeeded (``None``) or why it failed. ``begin`` starts a new batch: it forgets the
    outcomes and the batch's failure (after which further exports fail at once)."""

    def __init__(
        self,
        inner: SpanExporter,
        timeout: float,
        secrets: Sequence[str],
        outcomes: Outcomes | None = None,
    ) -> None:
        self.inner = inner
        self.timeout = timeout
        self.secrets = list(secrets)
        self.requests = outcomes or Outcomes(timeout)
        self._lock = threading.Lock()
        self._outcomes: dict[SpanKey, str | None] = {}
        self._failure: str | None = None
        self.calls = 0

    def begin(self) -> None:
        with self._lock:
            self._outcomes = {}
            self._failure = None

    def outcomes(self) -> dict[SpanKey, str | None]:
        with self._lock:
            return dict(self._outcomes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        keys = [_key(span) for span in spans]
        with self._lock:
            failure = self._failure
        if failure is None:
            self.requests.clear()
            with captured_logs() as lines:
                try:
                    result = self.inner.export(spans)
                except Exception as exc:  # noqa: BLE001 - a failed export, reported below
                    lines.append(f"{type(exc).__name__}: {exc}")
                    result = SpanExportResult.FAILURE
            self.calls += 1
            if result != SpanExportResult.SUCCESS:
                reason = self.requests.last() or failure_reason(lines, self.timeout)
                failure = scrub(reason, self.secrets)
        with self._lock:
            for key in keys:
                self._outcomes[key] = failure
            if failure is not None and self._failure is None:
                self._failure = failure
        return SpanExportResult.SUCCESS if failure is None else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        with captured_logs():
            self.inner.shutdown()


def _key(span: ReadableSpan) -> SpanKey:
    context = span.context
    assert context is not None
    return (context.trace_id, context.span_id)


# --------------------------------------------------------------------------- requests


def _env_header_names() -> set[str]:
    from . import _parse_headers

    names: set[str] = set()
    for variable in HEADER_VARIABLES:
        names |= {name for name, _ in _parse_headers(os.environ.get(variable) or "")}
    return names


CREDENTIAL_PROVIDER_VARIABLES = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


class Outcomes:
    """What the last HTTP request of each thread came to, when it was not a success."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.by_thread: dict[int, str] = {}

    def clear(self) -> None:
        self.by_thread.pop(threading.get_ident(), None)

    def last(self) -> str | None:
        return self.by_thread.get(threading.get_ident())

    def error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and "less than or equal to 0" in text:
            # The SDK retried with its deadline already spent (requests refuses a 0 s
            # timeout): the reason is what the earlier attempt came to.
            if threading.get_ident() in self.by_thread:
                return
            text = f"no answer within {self.timeout:g} s"
        if "connection refused" in text.lower():
            reason = "connection refused"
        elif "ReadTimeout" in text or "Read timed out" in text:
            reason = f"no answer within {self.timeout:g} s"
        else:
            reason = text[:300]
        self.by_thread[threading.get_ident()] = reason

    def answer(self, status: int, reason: str) -> None:
        if 200 <= status < 300:
            self.clear()
        else:
            self.by_thread[threading.get_ident()] = f"HTTP {status} {reason}".strip()


def exporter_session(headers: Mapping[str, str], outcomes: Outcomes) -> requests.Session | None:
    """The requests session the exporter sends with: it notes how each request ended (the
    reason of a failure, more exact than the exporter's log lines) and sends none of the
    ``OTEL_EXPORTER_OTLP_*HEADERS`` headers the target does not have (the SDK adds them to
    the ones it is given; the file's win). None (the SDK's own session) when an OTel
    credential provider is configured: it brings its own session."""
    if any(os.environ.get(name) for name in CREDENTIAL_PROVIDER_VARIABLES):
        return None
    drop = _env_header_names() - {name.lower() for name in headers}
    import requests

    class _Session(requests.Session):
        def send(self, request: Any, **kwargs: Any) -> Any:
            for name in drop:
                request.headers.pop(name, None)
            try:
                response = super().send(request, **kwargs)
            except Exception as exc:
                outcomes.error(exc)
                raise
            outcomes.answer(response.status_code, response.reason or "")
            return response

    return _Session()


def _target_headers(value: Any) -> dict[str, str]:
    """Headers as stored (``{name: "***"}``, only ever empty then) or as ``Credentials``
    hand them over (``[[name, value], ...]``)."""
    if isinstance(value, Mapping):
        return {str(k).lower(): str(v) for k, v in value.items()}
    return {str(k).lower(): str(v) for k, v in (value or [])}


# --------------------------------------------------------------------------- the sink


class OtlpSink:
    """Exports spooled runs to one OTLP/HTTP endpoint (``drain.Sink``)."""

    def __init__(self, target: Mapping[str, Any]) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise MissingExtraError(PACKAGE, EXTRA, "OpenTelemetry export") from exc
        self.endpoint = str(target["endpoint"])
        self.service = str(target.get("service") or DEFAULT_SERVICE_NAME)
        self.headers = _target_headers(target.get("headers"))
        self.timeout = float(target.get("timeout") or DEFAULT_TIMEOUT)
        rate = target.get("rate")
        self.rate = None if rate is None else float(rate)
        self.sampler = sampler_for(self.rate)
        secrets = [v for v in self.headers.values() if len(v) >= 3] + url_secrets(self.endpoint)
        outcomes = Outcomes(self.timeout)
        with captured_logs():
            inner = OTLPSpanExporter(
                endpoint=self.endpoint,
                headers=self.headers,
                timeout=self.timeout,
                session=exporter_session(self.headers, outcomes),
            )
        self.exporter = RecordingExporter(inner, self.timeout, secrets, outcomes)
        self.max_queue, self.max_batch = MAX_QUEUE, min(MAX_EXPORT_BATCH, MAX_QUEUE)
        self.processor = BatchSpanProcessor(
            self.exporter,  # type: ignore[arg-type]
            max_queue_size=self.max_queue,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=self.max_batch,
            export_timeout_millis=self.timeout * 1000,
        )
        self.exported = 0  # traces the endpoint took
        self.sampled_out = 0  # traces the sampler dropped (delivered: nothing to send)
        self._closed = False

    def __repr__(self) -> str:
        return f"OtlpSink({mask_url(self.endpoint)!r})"

    # ------------------------------------------------------------------ building

    def sampled(self, trace: TraceRecord) -> bool:
        """The sampler's decision for the trace's root span."""
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanKind, set_span_in_context

        remote = parent_context(trace.parent)
        context = Context()  # never the ambient context of this thread
        if remote is not None:
            context = set_span_in_context(NonRecordingSpan(remote), context)
        result = self.sampler.should_sample(
            context, otel_trace_id(trace), trace.root.name, SpanKind.INTERNAL
        )
        return bool(result.decision.is_sampled())

    def spans(self, record: SpoolRecord) -> list[ReadableSpan] | None:
        """The OTel spans of a spooled run; None when the sampler drops its trace."""
        from ...run.cost import summarize_cost
        from .spans import build_trace

        data = record.data
        result = data["result"]
        summarize_cost(result)
        trace = build_trace(data["workflow"], result, tags=data.get("tags") or {})
        trace.parent = data.get("parent")
        if not self.sampled(trace):
            return None
        return to_otel_spans(trace, service_name=self.service)

    # ------------------------------------------------------------------ writing

    def write(self, batch: Sequence[tuple[int, SpoolRecord]]) -> WriteResult:
        from .drain import WriteResult

        out = WriteResult()
        if self._closed:
            raise RuntimeError("the OTLP sink is closed")
        self.exporter.begin()
        waiting: dict[int, list[SpanKey]] = {}
        queued = 0
        for record_id, record in batch:
            try:
                spans = self.spans(record)
            except Exception as exc:  # noqa: BLE001 - this record is the problem
                out.rejected[record_id] = f"cannot build the spans: {type(exc).__name__}: {exc}"
                continue
            if spans is None:
                self.sampled_out += 1
                out.delivered.append(record_id)
                continue
            waiting[record_id] = [_key(span) for span in spans]
            for span in spans:
                if queued >= self.max_queue:  # never let the processor's queue drop a span
                    self._flush(queued)
                    queued = 0
                self.processor.on_end(span)
                queued += 1
        if not waiting:
            return out
        self._flush(queued)
        outcomes = self.exporter.outcomes()
        for record_id, keys in waiting.items():
            error = next((e for e in (outcomes.get(k, NOT_EXPORTED) for k in keys) if e), None)
            if error is None:
                out.delivered.append(record_id)
                self.exported += 1
            else:
                out.failed[record_id] = f"OTLP export failed: {error}"
        return out

    def _flush(self, spans: int) -> None:
        """Export what the processor holds, on this thread (the SDK's ``force_flush``; an
        older SDK's waits for its worker, up to the requests' time limits)."""
        requests = max(1, -(-spans // self.max_batch))
        self.processor.force_flush(int((self.timeout * requests + 5) * 1000))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with captured_logs():
            self.processor.shutdown()

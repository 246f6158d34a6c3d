"""Tier 1 and 2: every run's span tree, spooled (``spool``), drained (``drain``) into MLflow
stores (``mlflow_sink``, built by ``spans`` → ``mlflow_entities`` + ``artifacts``) and OTLP
endpoints (``otlp``). ``sinks_for`` decides, from a workflow's observability settings and the
standard ``OTEL_*`` environment variables, where a run goes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .spool import SinkRef, Spool
from .targets import (
    CREDENTIALS,
    MlflowTarget,
    OtlpTarget,
    PushTarget,
    mask_url,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from ...config.schema import ObservabilityConfig, OpenTelemetryConfig

DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/traces"


@dataclass
class SinkPlan:
    sinks: list[SinkRef] = field(default_factory=list)
    mlflow: MlflowTarget | None = None
    otlp: OtlpTarget | None = None


def sinks_for(obs: ObservabilityConfig, *, trace: bool | None = None) -> SinkPlan:
    """Where a run of a workflow with these settings goes.

    The Pushgateway gets a run when ``observability.prometheus`` is ``enabled`` and has a
    ``pushgateway_url``, unless this process serves its own ``/metrics`` (the server:
    ``observe.metrics.enable()``), which Prometheus scrapes; pushing too would count the
    server's runs twice."""
    from ..metrics.recorder import enabled as serves_metrics

    serving = serves_metrics()
    plan = SinkPlan()
    mlflow_on = obs.mlflow.enabled if trace is None else trace
    if mlflow_on:
        plan.mlflow = MlflowTarget(
            # Relative to the current folder, as MLflow resolves it (not to the file).
            resolve_tracking_uri(obs.mlflow.tracking_uri),
            obs.mlflow.experiment_name,
        )
        sink = plan.mlflow.sink()
        if mask_url(plan.mlflow.uri) != plan.mlflow.uri:
            CREDENTIALS.register(sink, {"uri": plan.mlflow.uri, "exp": plan.mlflow.experiment})
        plan.sinks.append(sink)
    if obs.opentelemetry.enabled and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        plan.otlp = otlp_target(obs.opentelemetry)
        sink = plan.otlp.sink()
        if plan.otlp.has_secret():
            CREDENTIALS.register(
                sink,
                {
                    "endpoint": plan.otlp.endpoint,
                    "service": plan.otlp.service_name,
                    "headers": [list(h) for h in plan.otlp.headers],
                    "timeout": plan.otlp.timeout,
                    "rate": plan.otlp.sampling_rate,
                },
            )
        plan.sinks.append(sink)
    gateway = obs.prometheus.pushgateway_url
    if gateway and obs.prometheus.enabled and not serving:
        push = PushTarget(gateway)
        sink = push.sink()
        if mask_url(gateway) != gateway:
            CREDENTIALS.register(sink, {"gateway": gateway})
        plan.sinks.append(sink)
    return plan


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _parse_headers(text: str) -> list[tuple[str, str]]:
    headers = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers.append((unquote(name.strip()).lower(), unquote(value.strip())))
    return headers


def otlp_target(config: OpenTelemetryConfig) -> OtlpTarget:
    """The OTLP endpoint, headers, timeout and sampling of a workflow: what its file sets,
    else the standard ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_TRACES_SAMPLER*`` variables, else the
    defaults."""
    given = config.model_fields_set
    endpoint = config.endpoint if "endpoint" in given else None
    if endpoint is None:
        endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if endpoint is None and (general := _env("OTEL_EXPORTER_OTLP_ENDPOINT")):
        endpoint = general.rstrip("/") + "/v1/traces"
    headers: list[tuple[str, str]] = []
    if "headers" in given:
        headers = [(k.lower(), v) for k, v in config.headers.items()]
    elif text := _env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        headers = _parse_headers(text)
    timeout = config.timeout_seconds
    if "timeout_seconds" not in given:
        text = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        if text:
            with contextlib.suppress(ValueError):
                timeout = float(text)
    service = config.service_name
    if "service_name" not in given:
        service = _env("OTEL_SERVICE_NAME") or service
    rate = config.sampling_rate if "sampling_rate" in given else None
    return OtlpTarget(
        endpoint=endpoint or DEFAULT_OTLP_ENDPOINT,
        service_name=service,
        headers=tuple(sorted(headers)),
        timeout=timeout,
        sampling_rate=rate,
    )


def wait_for(spool: Spool, record_ids: Sequence[int], timeout: float) -> bool:
    """Wait (at most ``timeout`` seconds) until the records are written to every sink."""
    from .drain import ensure_drained

    deadline = time.monotonic() + timeout
    delay = 0.005
    kicked = time.monotonic()
    while True:
        if not spool.pending(record_ids):
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if now - kicked > 1.0:  # a drainer that gave up or exited: start another
            ensure_drained(spool, [s.id for s in spool.sinks() if s.pending])
            kicked = now
        time.sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 2, 0.1)

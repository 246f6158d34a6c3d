"""Fixtures of the server tests: the PostgreSQL ones of ``tests/observe`` and a fresh
Prometheus registry per test (``create_app`` switches metrics on for the whole process),
with no API key in the environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from observe.conftest import postgres_server, postgres_tracking_uri  # noqa: F401

prometheus_client = pytest.importorskip("prometheus_client")


@pytest.fixture(autouse=True)
def _fresh_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from configurable_agents.observe.metrics import recorder as metrics

    monkeypatch.setattr(metrics, "_metrics", metrics.Metrics())
    monkeypatch.setattr(metrics, "_enabled", False)
    monkeypatch.delenv("CONFIGURABLE_AGENTS_API_KEY", raising=False)
    yield

"""``configurable-agents deploy``: a folder that brings a workflow's whole stack up with one
``docker compose up``.

The bundle (``write_bundle``) holds a Dockerfile for the workflow server, a
``docker-compose.yml`` with the server, the MLflow UI (traces, on a persistent volume),
Prometheus with the alert rules, Alertmanager, Grafana with its data sources and the
dashboards provisioned, and Arize Phoenix as the OTLP trace UI; the Prometheus, Alertmanager
and Grafana configuration files; and a README. Every port is published on 127.0.0.1 only
unless another address is asked for.
"""

from __future__ import annotations

from .bundle import SERVICES, Bundle, write_bundle

__all__ = ["SERVICES", "Bundle", "write_bundle"]

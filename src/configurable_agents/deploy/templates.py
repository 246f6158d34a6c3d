"""The text files of a deploy bundle (plain string templates; ``bundle.py`` fills them in)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..observe.metrics.alerts import AlertThresholds

# Container-side names and ports; the compose file, prometheus.yml, the Grafana data sources
# and the rewritten workflow all use these.
WORKFLOW_PORT = 8000
MLFLOW_PORT = 5000
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000
PHOENIX_PORT = 6006  # Phoenix serves its UI and OTLP/HTTP (/v1/traces) on one port

MLFLOW_URI = f"http://mlflow:{MLFLOW_PORT}"
OTLP_ENDPOINT = f"http://phoenix:{PHOENIX_PORT}/v1/traces"
DASHBOARDS_DIR = "/etc/grafana/dashboards"


def dockerfile(
    *, extras: Sequence[str], install: str, compiles: bool, version: str, workflow: str
) -> str:
    """``install``: ``"source"`` (the bundled ``package/`` copy) or ``"pypi"``."""
    spec = f"[{','.join(extras)}]"
    if install == "source":
        get_package = (
            "# The configurable-agents source this bundle was made from (see package/).\n"
            "COPY package/ /opt/configurable-agents/\n"
            f'RUN pip install "/opt/configurable-agents{spec}"\n'
        )
    else:
        get_package = f'RUN pip install "configurable-agents{spec}=={version}"\n'
    build_tools = ""
    if compiles:
        build_tools = (
            "# The local model runs through llama-cpp-python, which compiles llama.cpp.\n"
            "RUN apt-get update \\\n"
            "    && apt-get install -y --no-install-recommends build-essential cmake \\\n"
            "    && rm -rf /var/lib/apt/lists/*\n"
            'ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF"\n\n'
        )
    return f"""\
# The workflow server for '{workflow}' (written by `configurable-agents deploy`).
# The mlflow service of docker-compose.yml runs `mlflow server` from this image too, so the
# UI and the server share one MLflow version.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

{build_tools}{get_package}
# The workflow, and any files and tool modules next to it; tool modules import from /app.
COPY app/ /app/
ENV PYTHONPATH=/app \\
    CONFIGURABLE_AGENTS_STATE_DIR=/data/state \\
    MLFLOW_DISABLE_TELEMETRY=true

RUN useradd --create-home --uid 10001 app \\
    && mkdir -p /data /mlflow \\
    && chown app:app /data /mlflow
USER app
WORKDIR /data

EXPOSE {WORKFLOW_PORT}
CMD ["configurable-agents", "serve", "/app/workflow.yaml", "--host", "0.0.0.0", \\
     "--port", "{WORKFLOW_PORT}", "--database-url", "sqlite:////data/runs.db"]
"""


DOCKERIGNORE = """\
# Only package/ and app/ go into the image.
*
!package/
!app/
**/__pycache__
**/*.pyc
"""


def prometheus_yml(*, workflow: str) -> str:
    return f"""\
# Prometheus for '{workflow}' (written by `configurable-agents deploy`).
global:
  scrape_interval: 15s
  evaluation_interval: 15s

# Recording rules and the HighLatency, HighErrorRate and CostSpike alerts (thresholds at the
# top of the file).
rule_files:
  - rules.yml

alerting:
  alertmanagers:
    - static_configs:
        - targets: ["alertmanager:{ALERTMANAGER_PORT}"]

scrape_configs:
  - job_name: configurable-agents
    metrics_path: /metrics
    static_configs:
      - targets: ["workflow:{WORKFLOW_PORT}"]
    # With CONFIGURABLE_AGENTS_API_KEY set, /metrics wants the key too: put it in
    # prometheus/api_key and uncomment these lines.
    # authorization:
    #   type: Bearer
    #   credentials_file: api_key

  - job_name: prometheus
    static_configs:
      - targets: ["localhost:{PROMETHEUS_PORT}"]

  - job_name: alertmanager
    static_configs:
      - targets: ["alertmanager:{ALERTMANAGER_PORT}"]
"""


ALERTMANAGER_YML = """\
# Alertmanager (written by `configurable-agents deploy`). Alerts are grouped per alert and
# workflow; say where they go under `receivers` (see
# https://prometheus.io/docs/alerting/latest/configuration/). Until then they show in the
# Alertmanager UI and in Grafana's alerting pages only.
route:
  receiver: default
  group_by: [alertname, workflow]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: default
      repeat_interval: 1h

receivers:
  - name: default
    # webhook_configs:
    #   - url: http://alerts.example.internal/hook
    # slack_configs:
    #   - api_url_file: /etc/alertmanager/slack_webhook_url
    #     channel: "#llm-alerts"
    #     send_resolved: true

inhibit_rules:
  # A critical alert silences the warnings of the same workflow.
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [workflow]
"""


GRAFANA_DATASOURCES = f"""\
# Grafana data sources (written by `configurable-agents deploy`).
apiVersion: 1
datasources:
  - name: Prometheus
    uid: prometheus
    type: prometheus
    access: proxy
    url: http://prometheus:{PROMETHEUS_PORT}
    isDefault: true
    editable: false
    jsonData:
      timeInterval: 15s   # the scrape interval, for $__rate_interval
  - name: Alertmanager
    uid: alertmanager
    type: alertmanager
    access: proxy
    url: http://alertmanager:{ALERTMANAGER_PORT}
    editable: false
    jsonData:
      implementation: prometheus
"""


GRAFANA_DASHBOARD_PROVIDER = f"""\
# Grafana dashboards from files (written by `configurable-agents deploy`).
apiVersion: 1
providers:
  - name: configurable-agents
    folder: Configurable Agents
    type: file
    disableDeletion: true
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {DASHBOARDS_DIR}
"""


def readme(
    *,
    workflow: str,
    source_name: str,
    extras: Sequence[str],
    install: str,
    bind: str,
    ports: dict[str, int],
    api_key_env: Sequence[str],
    wired: bool,
    notes: Sequence[str],
    thresholds: AlertThresholds,
    example_inputs: dict[str, Any],
) -> str:
    def url(service: str) -> str:
        host = "localhost" if bind in ("127.0.0.1", "0.0.0.0") else bind
        return f"http://{host}:{ports[service]}"

    keys = "".join(f"    {name}=...\n" for name in api_key_env)
    env_lines = (
        "The workflow's providers need API keys; put them in a `.env` file next to this README\n"
        "(Compose reads it), never in the files of the bundle:\n\n"
        f"```\n{keys}```\n\n"
        if api_key_env
        else ""
    )
    if wired:
        wiring = (
            f"`app/workflow.yaml` is `{source_name}` with its observability pointed at this\n"
            f"stack: `observability.mlflow` on, tracking URI `{MLFLOW_URI}`;\n"
            f"`observability.opentelemetry` on, endpoint `{OTLP_ENDPOINT}`. The rest of the\n"
            "file is unchanged. Edit it there (or deploy again with `--force`).\n"
        )
    else:
        wiring = (
            f"`app/workflow.yaml` is a copy of `{source_name}`. To see traces in this stack,\n"
            f"set `observability.mlflow.tracking_uri: {MLFLOW_URI}` and\n"
            f"`observability.opentelemetry.endpoint: {OTLP_ENDPOINT}` (both `enabled: true`).\n"
        )
    package = (
        "`package/` is the configurable-agents source this bundle was made from; the image\n"
        f'installs it with `pip install "/opt/configurable-agents[{",".join(extras)}]"`.'
        if install == "source"
        else f"The image installs `configurable-agents[{','.join(extras)}]` from PyPI."
    )
    th = thresholds
    w, m, p, a, g, x = (
        url(s) for s in ("workflow", "mlflow", "prometheus", "alertmanager", "grafana", "phoenix")
    )
    note_text = "".join(f"- {n}\n" for n in notes)
    notes_section = f"\n## Check before you deploy\n\n{note_text}" if notes else ""
    return f"""\
# {workflow}: deployment bundle

Written by `configurable-agents deploy`. One command brings the whole stack up:

```bash
docker compose up -d --build
```

| service | what | address |
| --- | --- | --- |
| workflow | the HTTP server: `POST /runs`, `GET /runs/{{id}}`, `/docs`, `/metrics` | {w} |
| mlflow | MLflow UI: one trace per run, cost, prompts | {m} |
| prometheus | metrics and alert rules (`prometheus/rules.yml`) | {p} |
| alertmanager | where firing alerts go (`alertmanager/alertmanager.yml`) | {a} |
| grafana | dashboards: workflow performance, LLM usage and cost, per-node latency | {g} |
| phoenix | Arize Phoenix: the OTLP trace view of every run | {x} |

Ports are published on {bind} only. Grafana's login is `admin` with the password in
`GRAFANA_ADMIN_PASSWORD` (default `admin`: change it).

Try a run:

```bash
curl -s {url("workflow")}/runs -H 'Content-Type: application/json' \\
  -d '{json.dumps({"inputs": example_inputs})}'
```

## Settings

{env_lines}Set `CONFIGURABLE_AGENTS_API_KEY` (in `.env`) to require `Authorization: Bearer <key>`
on the server; it covers `/metrics` too, so then write the key to `prometheus/api_key` and
uncomment the `authorization` lines in `prometheus/prometheus.yml`.

{wiring}
{package}

Alerts (`prometheus/rules.yml`; the thresholds are the `vector(...)` records at its top):

- HighLatency: a workflow's p95 run time over {th.latency_p95_seconds:g} s for 10 minutes;
- HighErrorRate: over {th.error_ratio * 100:g} % of a workflow's runs failing for 10 minutes;
- CostSpike: LLM spend over {th.cost_usd_per_hour:g} USD/hour, or {th.cost_spike_factor:g} times
  the rate of the day before and over {th.cost_spike_min_usd_per_hour:g} USD/hour, for 15 minutes.

Alertmanager sends them nowhere until you add a receiver in `alertmanager/alertmanager.yml`.

Data lives in named volumes (`workflow-data` for run records, `mlflow-data`,
`prometheus-data`, `alertmanager-data`, `grafana-data`, `phoenix-data`): `docker compose down`
keeps it, `docker compose down -v` deletes it.
{notes_section}"""

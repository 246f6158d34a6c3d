"""Reports through MLflow's API: ``MlflowClient.search_traces``, aggregated in Python.

Used for tracking servers (``http(s)://``) and any store that is not a SQL database. Pages
through the selected traces (time range, status and workflow go into the search filter) and
sums each one into the same ``Groups`` the SQL path builds, so both give the same report.
Spans are fetched only when a breakdown or a profile needs them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from ...exceptions import InputError, Issue
from ..trace.targets import mask_url
from .model import (
    WORKFLOW_PREFIX,
    CallGroup,
    Filters,
    Groups,
    TraceGroup,
    bucket_of,
    to_pico,
    workflow_of,
)

PAGE_SIZE = 500
_NAME = re.compile(r"^[A-Za-z0-9_.\- ]+$")


def _client(uri: str) -> Any:
    from ..trace.mlflow_sink import check_reachable as _check_reachable
    from ..trace.mlflow_sink import require_mlflow

    require_mlflow()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        _check_reachable(uri)
    except ConnectionError as exc:
        raise InputError(
            Issue(str(exc), hint="is the tracking server running, and is --tracking-uri right?")
        ) from None
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _experiment_ids(client: Any, uri: str, name: str | None) -> list[str]:
    if name is not None:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage != "deleted":
            return [str(experiment.experiment_id)]
        names = sorted(e.name for e in _all_experiments(client))
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise InputError(
            Issue(
                f"no experiment named {name!r} in {mask_url(uri)}",
                hint=f"experiments there: {listed}" if names else None,
            )
        )
    return [str(e.experiment_id) for e in _all_experiments(client)]


def _all_experiments(client: Any) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _quoted(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise InputError(
            Issue(
                f"{what} {value!r} has characters a name cannot have", hint="letters, digits, _ . -"
            )
        )
    return f"'{value}'"


def filter_string(f: Filters) -> str:
    """The ``search_traces`` filter for ``f`` (our traces are picked out in Python)."""
    parts = []
    if f.workflow is not None:
        parts.append(f"trace.name = {_quoted(WORKFLOW_PREFIX + f.workflow, 'workflow')}")
    if f.start_ms is not None:
        parts.append(f"trace.timestamp_ms >= {int(f.start_ms)}")
    if f.end_ms is not None:
        parts.append(f"trace.timestamp_ms < {int(f.end_ms)}")
    if f.status is not None:
        parts.append(f"trace.status = '{'OK' if f.status == 'succeeded' else 'ERROR'}'")
    if f.batch is not None:
        parts.append(f"tags.`ca.batch_id` = {_quoted(f.batch, 'batch id')}")
    return " AND ".join(parts)


def search(client: Any, ids: list[str], f: Filters, *, spans: bool) -> Iterator[Any]:
    """Every trace matching ``f`` in the experiments ``ids``, page by page."""
    token = None
    text = filter_string(f) or None
    while True:
        page = client.search_traces(
            locations=ids,
            filter_string=text,
            max_results=PAGE_SIZE,
            page_token=token,
            include_spans=spans,
        )
        yield from page
        token = page.token
        if not token:
            return


def collect(uri: str, filters: Filters, *, spans: bool, profile: bool, buckets: bool) -> Groups:
    client = _client(uri)
    ids = _experiment_ids(client, uri, filters.experiment)
    groups = Groups()
    if ids:
        traces: Iterable[Any] = search(client, ids, filters, spans=spans)
        if filters.tags:
            wanted = dict(filters.tags)
            traces = [t for t in traces if all(t.info.tags.get(k) == v for k, v in wanted.items())]
        add_traces(groups, traces, spans, profile, buckets)
    return groups


def add_traces(groups: Groups, traces: Any, spans: bool, profile: bool, buckets: bool) -> Groups:
    """Sum MLflow ``Trace`` objects into ``groups`` exactly as the SQL queries do."""
    for trace in traces:
        info = trace.info
        tags = info.tags
        if "ca.workflow" not in tags:
            continue  # not written by configurable-agents
        name = tags.get("mlflow.traceName") or WORKFLOW_PREFIX + tags["ca.workflow"]
        workflow = workflow_of(name)
        key = (workflow, bucket_of(int(info.request_time)) if buckets else None)
        g = groups.traces.setdefault(key, TraceGroup())
        state = getattr(info.state, "value", info.state)
        g.runs += 1
        g.succeeded += state == "OK"
        g.failed += state == "ERROR"
        g.duration_ms += int(info.execution_duration or 0)
        usage = info.token_usage or {}
        g.usage.add(
            to_pico((info.cost or {}).get("total_cost")),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            usage.get("total_tokens"),
        )
        if spans:
            _add_spans(groups, workflow, trace.data.spans, profile)
    return groups


def _cost(span: Any) -> Any:
    cost = span.attributes.get("mlflow.llm.cost")
    return cost.get("total_cost") if isinstance(cost, dict) else None


def _add_spans(groups: Groups, workflow: str, spans: list[Any], profile: bool) -> None:
    names = {s.span_id: s.name for s in spans if s.span_type == "AGENT"}
    for span in spans:
        kind = span.span_type
        if kind == "CHAT_MODEL":
            usage = span.attributes.get("mlflow.chat.tokenUsage") or {}
            c = groups.models.setdefault(span.attributes.get("mlflow.llm.model") or "", CallGroup())
            c.calls += 1
            c.usage.add(
                to_pico(_cost(span)),
                usage.get("input_tokens"),
                usage.get("output_tokens"),
                usage.get("total_tokens"),
            )
        elif kind == "AGENT":
            node = groups.nodes.setdefault((workflow, span.name), CallGroup())
            tin = int(span.attributes.get("node.input_tokens") or 0)
            tout = int(span.attributes.get("node.output_tokens") or 0)
            node.calls += 1
            node.usage.add(to_pico(_cost(span)), tin, tout, tin + tout)
            if profile:
                duration = int(span.end_time_ns or 0) - int(span.start_time_ns or 0)
                groups.durations.setdefault((workflow, span.name), []).append(duration)
        elif (
            profile
            and kind == "PARSER"
            and span.name == "validate_output"
            and span.status.status_code.value == "ERROR"
            and span.parent_id in names
        ):
            key = (workflow, names[span.parent_id])
            groups.retries[key] = groups.retries.get(key, 0) + 1


def recent_count(uri: str, experiment: str | None, since_ms: int) -> tuple[int, list[str]]:
    """Traces (ours) since ``since_ms``, and the names of the experiments looked at."""
    client = _client(uri)
    ids = _experiment_ids(client, uri, experiment)
    names = sorted(client.get_experiment(i).name for i in ids)
    if not ids:
        return 0, names
    groups = add_traces(
        Groups(), search(client, ids, Filters(start_ms=since_ms), spans=False), False, False, False
    )
    return sum(g.runs for g in groups.traces.values()), names

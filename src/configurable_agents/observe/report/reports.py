"""``report costs``, ``report profile`` and ``observability status``: reports over the traces.

Reports read traces, never MLflow runs. Where they come from depends on the tracking URI:

* SQL stores (``sqlite:``, ``postgresql:``, ``mysql:``) at a schema revision the SQL was
  written for: ``report.sql`` aggregates inside the database, read only: from the rollup
  (``report.rollup``, pre-aggregated as traces are written) when it covers the selection,
  else with ``GROUP BY`` over MLflow's ``trace_info`` and ``spans`` tables;
* anything else (``http(s)://`` servers, and SQL stores at another schema revision, with one
  warning): ``report.rest`` pages through ``MlflowClient.search_traces`` and aggregates in
  Python.

All produce the same small grouped rows (``Groups``), costs summed as integer picodollars;
everything after that (totals, averages, periods, percentiles, the bottleneck) is computed
here, once, so every path gives identical reports on the same traces. Only traces written by
configurable-agents (those with a ``ca.workflow`` tag) are counted.

What is counted where:

* runs, status, cost and tokens of a run: the trace (``trace_info``: its cost and token
  columns, filled from our metadata, are the sums of the run's chat-model spans);
* by model: the ``CHAT_MODEL`` spans (model, ``mlflow.llm.cost``, ``mlflow.chat.tokenUsage``);
* by node: the ``AGENT`` spans, one per node visit (cost, ``node.input_tokens``,
  ``node.output_tokens``, duration); retries are the node's ``validate_output`` spans with
  status ERROR.

Periods are local-time days, ISO weeks (Monday first) and months. Costs are in USD.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ...exceptions import InputError, Issue
from .model import (
    CostReport,
    Filters,
    Groups,
    ModelUsage,
    NodeCost,
    NodeProfile,
    PeriodCost,
    ProfileReport,
    WorkflowCost,
    _iso_ms,
    build_cost_report,
    build_profile_report,
)

PERIODS = ("today", "yesterday", "last_7_days", "last_30_days", "this_month")
AGGREGATES = ("daily", "weekly", "monthly")
STATUSES = {
    "success": "succeeded",
    "succeeded": "succeeded",
    "failure": "failed",
    "failed": "failed",
}
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
log = logging.getLogger("configurable_agents.observe")


# --------------------------------------------------------------------------- periods, filters


def _local_midnight_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day).timestamp() * 1000)


def _parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(
            Issue(
                f"{option} {value!r} is not a date",
                hint="write it as YYYY-MM-DD, e.g. 2026-01-31",
            )
        ) from None


def resolve_period(
    period: str | None,
    start_date: str | dt.date | None = None,
    end_date: str | dt.date | None = None,
    now: dt.datetime | None = None,
) -> tuple[int | None, int | None]:
    """A named period or ISO dates as ``(start_ms, end_ms)`` (end exclusive), local time.

    ``today``, ``yesterday``; ``last_7_days`` / ``last_30_days`` are today and the 6 / 29
    days before it; ``this_month`` starts on the 1st. ``end_date`` is inclusive (the whole
    day). ``None`` means unbounded on that side.
    """
    if period is not None and (start_date is not None or end_date is not None):
        raise InputError(
            Issue(
                "give either a period or start/end dates, not both",
                hint="e.g. --period last_7_days, or --start-date 2026-01-01 --end-date 2026-01-31",
            )
        )
    today = (now or dt.datetime.now()).date()
    one = dt.timedelta(days=1)
    if period is not None:
        first: dt.date
        last = today
        if period == "today":
            first = today
        elif period == "yesterday":
            first = last = today - one
        elif period == "last_7_days":
            first = today - 6 * one
        elif period == "last_30_days":
            first = today - 29 * one
        elif period == "this_month":
            first = today.replace(day=1)
        else:
            raise InputError(
                Issue(f"unknown period {period!r}", hint=f"use one of: {', '.join(PERIODS)}")
            )
        return _local_midnight_ms(first), _local_midnight_ms(last + one)
    start = end = None
    if start_date is not None:
        day = (
            start_date if isinstance(start_date, dt.date) else _parse_date(start_date, "start date")
        )
        start = _local_midnight_ms(day)
    if end_date is not None:
        day = end_date if isinstance(end_date, dt.date) else _parse_date(end_date, "end date")
        end = _local_midnight_ms(day + one)
    if start is not None and end is not None and end <= start:
        raise InputError(
            Issue(
                f"the end date {end_date} is before the start date {start_date}",
                hint="the end date is inclusive: use the same date for a single day",
            )
        )
    return start, end


def _time_ms(value: int | float | dt.datetime | dt.date | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return _local_midnight_ms(value)
    return int(value)


def normalize_status(status: str | None) -> str | None:
    if status is None:
        return None
    try:
        return STATUSES[status.strip().lower()]
    except KeyError:
        raise InputError(
            Issue(f"unknown status {status!r}", hint="use success (succeeded) or failure (failed)")
        ) from None


def make_filters(
    experiment: str | None = None,
    workflow: str | None = None,
    start: int | float | dt.datetime | dt.date | None = None,
    end: int | float | dt.datetime | dt.date | None = None,
    status: str | None = None,
    tags: Mapping[str, str] | None = None,
    batch: str | None = None,
) -> Filters:
    return Filters(
        experiment,
        workflow,
        _time_ms(start),
        _time_ms(end),
        normalize_status(status),
        tuple(sorted((tags or {}).items())),
        batch,
    )


# --------------------------------------------------------------------------- entry points


def store_kind(uri: str) -> Literal["sql", "rest"]:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    return "sql" if scheme in SQL_SCHEMES else "rest"


def _collect(
    tracking_uri: str,
    filters: Filters,
    *,
    spans: bool,
    profile: bool,
    buckets: bool,
    backend: str | None,
) -> tuple[str, str, Groups]:
    """``(masked uri, source, groups)``. SQL stores: the rollup or the span tables; a schema
    revision the SQL was not written for: ``search_traces`` with one warning (an error when
    ``backend`` asks for SQL explicitly)."""
    from ..trace.targets import mask_url, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    kind = backend or store_kind(uri)
    options = {"spans": spans, "profile": profile, "buckets": buckets}
    if kind == "sql" and not profile and uri.startswith("sqlite:"):
        from .fast import collect as fast_collect

        found = fast_collect(uri, filters, spans=spans, buckets=buckets)
        if found is not None:
            return mask_url(uri), "rollup", found
    if kind in ("sql", "spans"):
        from .sql import collect as sql_collect
        from .store import UnknownSchema

        try:
            source, groups = sql_collect(uri, filters, **options, use_rollup=kind == "sql")
            return mask_url(uri), source, groups
        except UnknownSchema as exc:
            if backend is not None:
                raise InputError(Issue(str(exc), hint=SCHEMA_HINT)) from None
            _warn_once(exc)
    return mask_url(uri), "search_traces", _rest(uri, filters, options)


SCHEMA_HINT = (
    "install the MLflow version configurable-agents pins (pyproject.toml), or upgrade "
    "configurable-agents"
)
_warned: set[tuple[str, str | None]] = set()


def _warn_once(exc: Any) -> None:
    key = (exc.uri, exc.revision)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s; reading the traces through MLflow's search_traces instead (slower)", exc)


def _rest(uri: str, filters: Filters, options: dict[str, bool]) -> Groups:
    """The search_traces path, with MLflow's own errors (a store it cannot read) turned into
    input errors that show no password."""
    from ..trace.targets import mask_url, scrub, url_secrets
    from .rest import collect as rest_collect

    try:
        return rest_collect(uri, filters, **options)
    except InputError:
        raise
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException):
            raise
        text = scrub(str(getattr(exc, "message", exc)).strip(), url_secrets(uri))
        raise InputError(
            Issue(
                f"MLflow cannot read {mask_url(uri)}: {text.splitlines()[0] if text else exc}",
                hint=SCHEMA_HINT if store_kind(uri) == "sql" else None,
            )
        ) from None


def cost_report(
    tracking_uri: str,
    *,
    experiment: str | None = None,
    workflow: str | None = None,
    start: int | float | dt.datetime | dt.date | None = None,
    end: int | float | dt.datetime | dt.date | None = None,
    status: str | None = None,
    breakdown: bool = False,
    aggregate_by: str | None = None,
    backend: Literal["sql", "spans", "rest"] | None = None,
    tags: Mapping[str, str] | None = None,
    by: str | None = None,
    batch: str | None = None,
    recommend: bool = False,
) -> CostReport:
    """Cost of the traces in ``tracking_uri``.

    ``start`` / ``end``: epoch milliseconds, datetimes or dates (local midnight); start
    inclusive, end exclusive (``resolve_period`` turns periods and ISO dates into these).
    ``status``: success/succeeded or failure/failed; ``batch``: only the rows of that
    ``configurable-agents batch`` (its ``ca.batch_id`` tag). ``breakdown`` adds cost by model and by
    node; ``aggregate_by`` (daily, weekly, monthly) adds one entry per period. ``backend``
    forces a path: ``sql`` (the rollup when it covers the selection, else the span tables),
    ``spans`` (the span tables only) or ``rest`` (search_traces); default: ``sql`` for SQL
    stores. ``report.source`` says which one answered. ``tags``: only traces with these tag
    values (``{"tenant": "acme"}``; the span tables or search_traces answer then, the rollup
    keeps no tags); ``by``: also cost per value of that tag (``report.by_tag``);
    ``recommend``: cheaper models per node (``report.advice``, ``report.recommendations``).
    """
    if aggregate_by is not None and aggregate_by not in AGGREGATES:
        raise InputError(
            Issue(
                f"unknown aggregation {aggregate_by!r}", hint=f"use one of: {', '.join(AGGREGATES)}"
            )
        )
    filters = make_filters(experiment, workflow, start, end, status, tags, batch)
    uri, source, groups = _collect(
        tracking_uri,
        filters,
        spans=breakdown,
        profile=False,
        buckets=aggregate_by is not None,
        backend=backend,
    )
    report = build_cost_report(groups, uri, filters, breakdown=breakdown, aggregate_by=aggregate_by)
    report.source = source
    if by is not None:
        from ..trace.targets import resolve_tracking_uri
        from .attribution import cost_by_tag

        report.by_tag = cost_by_tag(resolve_tracking_uri(tracking_uri), by, filters)
        report.filters["by"] = by
    if recommend:
        from ..trace.targets import resolve_tracking_uri
        from .advice import node_models

        resolved = resolve_tracking_uri(tracking_uri)
        kind = "rest" if source == "search_traces" else store_kind(resolved)
        report.recommendations = [r.to_dict() for r in node_models(resolved, filters, kind)]
    return report


def profile_report(
    tracking_uri: str,
    *,
    experiment: str | None = None,
    workflow: str | None = None,
    start: int | float | dt.datetime | dt.date | None = None,
    end: int | float | dt.datetime | dt.date | None = None,
    status: str | None = None,
    backend: Literal["sql", "spans", "rest"] | None = None,
    batch: str | None = None,
) -> ProfileReport:
    """Per node over the selected traces: visits, p50/p95/max duration, share of run time,
    retries, tokens and cost; the node with the largest share is the bottleneck."""
    filters = make_filters(experiment, workflow, start, end, status, batch=batch)
    uri, source, groups = _collect(
        tracking_uri, filters, spans=True, profile=True, buckets=False, backend=backend
    )
    report = build_profile_report(groups, uri, filters)
    report.source = source
    return report


def ensure_report_indexes(
    tracking_uri: str, *, rollup_mode: Literal["new", "stale", "all"] = "new"
) -> list[str]:
    """Create what makes reports fast on a SQL store (the SQLite span indexes; the rollup,
    filled from the traces there; see ``report.sql.ensure_report_indexes``); return what was
    created or rebuilt. ``rollup_mode``: ``stale`` also rebuilds the experiments the rollup
    does not cover, ``all`` every one."""
    from .sql import ensure_report_indexes as ensure

    return ensure(tracking_uri, rollup_mode=rollup_mode)


def write_report(report: CostReport | ProfileReport, path: str | Path, fmt: str = "json") -> None:
    """Write ``report`` as JSON or CSV."""
    text = report.to_csv() if fmt == "csv" else report.to_json() + "\n"
    Path(path).write_text(text, encoding="utf-8")


def observability_status(
    tracking_uri: str, experiment: str | None = None, spool: Path | None = None
) -> dict[str, Any]:
    """Where traces go, how many arrived in the last 24 h, and the local spool: what is
    pending per sink, the oldest pending run's age, the last error and write per sink.

    Never raises for an unreachable or missing store: that is reported under ``error``.
    """
    import json
    import time

    from ..trace.spool import open_spool, spool_path
    from ..trace.targets import mask_url, resolve_tracking_uri, scrub, url_secrets

    uri = resolve_tracking_uri(tracking_uri)
    kind = store_kind(uri)
    out: dict[str, Any] = {
        "tracking_uri": mask_url(uri),
        "store": uri.split(":", 1)[0].split("+", 1)[0].lower(),
        "experiment": experiment,
        "reachable": False,
        "traces_last_24h": None,
        "experiments": None,
        "last_success_at": None,
        "last_error": None,
        "last_error_at": None,
        "error": None,
    }
    path = spool or spool_path()
    sinks = []
    now = time.time()
    if path.exists():
        spooled = open_spool(path)
        for state in spooled.sinks():
            entry = {
                "sink": state.kind,
                "target": json.loads(state.target),
                "pending": state.pending,
                "oldest_pending_age_s": round(now - state.oldest, 1) if state.oldest else None,
                "written": state.written,
                "last_success_at": _iso_s(state.last_success_at),
                "last_error": state.last_error,
                "last_error_at": _iso_s(state.last_error_at),
            }
            sinks.append(entry)
            target = entry["target"]
            if state.kind == "mlflow" and target.get("uri") == mask_url(uri):
                for key in ("last_success_at", "last_error", "last_error_at"):
                    out[key] = out[key] or entry[key]
        out["spool"] = {
            "path": str(path),
            "pending": sum(s["pending"] for s in sinks),
            "dropped": spooled.counter("dropped"),
            "sinks": sinks,
        }
    else:
        out["spool"] = {"path": str(path), "pending": 0, "dropped": 0, "sinks": []}
    since = int(dt.datetime.now().timestamp() * 1000) - 24 * 3600 * 1000
    try:
        count, experiments = _recent_count(uri, kind, experiment, since)
    except Exception as exc:  # noqa: BLE001 - the status command reports every failure
        text = scrub(str(exc).strip(), url_secrets(uri))
        out["error"] = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, InputError) and exc.issues and exc.issues[0].hint:
            out["hint"] = exc.issues[0].hint
        return out
    out.update(reachable=True, traces_last_24h=count, experiments=experiments)
    return out


def _recent_count(uri: str, kind: str, experiment: str | None, since: int) -> tuple[int, list[str]]:
    if kind == "sql":
        from .sql import recent_count
        from .store import UnknownSchema

        try:
            return recent_count(uri, experiment, since)
        except UnknownSchema as exc:
            _warn_once(exc)
    from .rest import recent_count as rest_recent_count

    return rest_recent_count(uri, experiment, since)


def _iso_s(value: float | None) -> str | None:
    return None if value is None else _iso_ms(int(value * 1000))


__all__ = [
    "AGGREGATES",
    "PERIODS",
    "CostReport",
    "Filters",
    "Groups",
    "ModelUsage",
    "NodeCost",
    "NodeProfile",
    "PeriodCost",
    "ProfileReport",
    "WorkflowCost",
    "cost_report",
    "ensure_report_indexes",
    "observability_status",
    "profile_report",
    "resolve_period",
    "write_report",
]

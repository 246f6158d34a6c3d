"""The Pushgateway sink: cumulative Prometheus metrics for runs that have no /metrics to scrape.

A CLI run (or a run through the Python API) with ``observability.prometheus.enabled`` and
``pushgateway_url`` is spooled for the ``metrics`` sink; a drainer hands batches of them to
``PushSink.write``, which

1. adds each run's increments (``workflow_runs_total`` by workflow and status, tokens and cost
   by model, the bucket counts, sum and count of ``workflow_duration_seconds``,
   ``node_duration_seconds`` and ``judge_score``) to running totals kept in the spool file,
   and marks the record applied, in one SQLite transaction: a record is counted once, however
   often its batch is retried (a push that fails, a crash between applying and pushing, a
   drainer killed after the push but before the spool forgot the record);
2. PUTs the whole cumulative state of those totals to the Pushgateway, as job
   ``configurable_agents`` in the group ``instance=<host>``, ``spool=<id>``;
3. reports the batch delivered only once the Pushgateway accepted it (failed otherwise: the
   drainer retries with backoff; the totals do not change again).

One group per spool file. The spool is where the totals live, so the group must be the
spool's, not the process's or the run's: every process on the machine that uses the spool
pushes the same, ever-growing totals, and a counter in that group never goes backwards
(``increase()`` and ``rate()`` work across runs). ``spool`` is a random id the spool gets with
its first totals and ``instance`` the host name it got them on; both stay with the file, so
two spools (two users, or workflows with their own ``observability.spool.path``) never
overwrite each other's group, nor do two machines. Deleting the spool starts new totals in a
new group; the old group keeps its last values (delete it in the Pushgateway's UI or API).

``active_workflows`` is not pushed: a pushed value stays in the Pushgateway until the next
push, so a gauge of runs in progress would be stale by design (and stuck above zero after a
crash). The server (``configurable-agents serve``) exposes it on its own ``/metrics``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import MissingExtraError
from ...wal import enable_wal
from .recorder import DURATION_BUCKETS, HELP, NODE_BUCKETS, SCORE_BUCKETS

if TYPE_CHECKING:
    from ...run.result import RunResult
    from ..trace.drain import WriteResult
    from ..trace.spool import SpoolRecord

JOB = "configurable_agents"
PUSH_TIMEOUT = 10.0
SUM = "sum"  # the ``le`` of a histogram's sum row

# metric → (type, label names, buckets)
FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "workflow_runs": ("counter", ("workflow", "status"), ()),
    "llm_tokens": ("counter", ("model", "type"), ()),
    "llm_cost_usd": ("counter", ("model",), ()),
    "budget_refusals": ("counter", ("workflow", "budget"), ()),
    "workflow_duration_seconds": ("histogram", ("workflow",), DURATION_BUCKETS),
    "node_duration_seconds": ("histogram", ("workflow", "node"), NODE_BUCKETS),
    "judge_score": ("histogram", ("workflow", "judge"), SCORE_BUCKETS),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS push_store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store TEXT NOT NULL,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS push_totals (
    gateway TEXT NOT NULL,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    le TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (gateway, metric, labels, le)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_applied (
    gateway TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    PRIMARY KEY (gateway, record_id)
) WITHOUT ROWID;
"""
# push_totals: one row per counter series (le ''), per histogram bucket (le: its upper bound,
# '+Inf' for the rest; counts per bucket, not cumulative) and per histogram sum (le 'sum').
# push_applied: the spool records already in the totals of a gateway (pruned once the spool
# has forgotten them).

Row = tuple[str, str, str, float]  # metric, labels (JSON list of values), le, increment


def _go(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


def increments(result: RunResult) -> list[Row]:
    """What one finished run adds to the totals (the same as ``Metrics.run_finished``)."""
    from ...run.cost import peek_cost

    workflow = result.workflow
    rows: list[Row] = [("workflow_runs", _labels(workflow, result.status), "", 1.0)]
    rows += _observe("workflow_duration_seconds", (workflow,), result.duration_ms / 1000)
    for node in result.nodes:
        rows += _observe("node_duration_seconds", (workflow, node.node), node.duration_ms / 1000)
    if result.budget and result.budget.get("refused"):
        rows.append(("budget_refusals", _labels(workflow, str(result.budget["refused"])), "", 1.0))
    for verdict in result.judges or []:  # in-run judges, and warn ones (judging.py)
        if verdict.score is not None:
            rows += _observe("judge_score", (workflow, verdict.name), float(verdict.score))
    for model, entry in peek_cost(result).by_model.items():
        rows.append(("llm_tokens", _labels(model, "input"), "", float(entry.input_tokens)))
        rows.append(("llm_tokens", _labels(model, "output"), "", float(entry.output_tokens)))
        rows.append(("llm_cost_usd", _labels(model), "", float(entry.cost_usd)))
    return rows


def _labels(*values: str) -> str:
    return json.dumps(list(values))


def _observe(metric: str, labels: tuple[str, ...], value: float) -> list[Row]:
    buckets = FAMILIES[metric][2]
    bound = next((_go(b) for b in buckets if value <= b), "+Inf")
    key = _labels(*labels)
    return [(metric, key, bound, 1.0), (metric, key, SUM, value)]


class Totals:
    """The cumulative totals of one gateway, as a Prometheus collector."""

    def __init__(self, rows: Sequence[tuple[str, str, str, float]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        by_metric: dict[str, dict[str, dict[str, float]]] = {}
        for metric, labels, le, value in self.rows:
            by_metric.setdefault(metric, {}).setdefault(labels, {})[le] = value
        for metric, (kind, names, buckets) in FAMILIES.items():
            series = by_metric.get(metric)
            if not series:
                continue
            if kind == "counter":
                counter = CounterMetricFamily(metric, HELP[metric], labels=names)
                for labels, values in sorted(series.items()):
                    counter.add_metric(json.loads(labels), values.get("", 0.0))
                yield counter
                continue
            histogram = HistogramMetricFamily(metric, HELP[metric], labels=names)
            for labels, values in sorted(series.items()):
                histogram.add_metric(
                    json.loads(labels), _cumulative(values, buckets), values.get(SUM, 0.0)
                )
            yield histogram


def _cumulative(values: dict[str, float], buckets: tuple[float, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus' cumulative ``le`` buckets (every configured bound,
    and any bound an older version stored)."""
    bounds = {b: _go(b) for b in buckets}
    for le in values:
        if le not in ("", SUM, "+Inf"):
            with contextlib.suppress(ValueError):
                bounds.setdefault(float(le), le)
    out: list[tuple[str, float]] = []
    running = 0.0
    for bound in sorted(bounds):
        running += values.get(bounds[bound], 0.0)
        out.append((bounds[bound], running))
    out.append(("+Inf", running + values.get("+Inf", 0.0)))
    return out


class PushSink:
    """The ``metrics`` sink of a spool: cumulative totals, pushed to one Pushgateway.

    ``gateway`` is the real URL (a password in it is sent as HTTP basic auth);
    ``state_path`` the spool file the totals live in (default: the default spool).
    """

    def __init__(
        self,
        gateway: str,
        state_path: Path | None = None,
        *,
        job: str = JOB,
        timeout: float = PUSH_TIMEOUT,
    ) -> None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("prometheus-client", "server", "Prometheus metrics") from exc
        from ..trace.spool import spool_path
        from ..trace.targets import PushTarget

        self.gateway = gateway
        self.key = PushTarget(gateway).sink().key  # the totals' key: the URL, password masked
        self.path = state_path or spool_path()
        self.job = job
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ the totals

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                with contextlib.suppress(OSError):
                    os.chmod(self.path, 0o600)
                enable_wal(db)
                db.execute("PRAGMA busy_timeout=30000")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def group(self) -> dict[str, str]:
        """The Pushgateway grouping key of this spool's totals (besides the job)."""
        with self._tx() as db:
            return self._group(db)

    def _group(self, db: sqlite3.Connection) -> dict[str, str]:
        row = db.execute("SELECT store, host FROM push_store WHERE id = 1").fetchone()
        if row is None:
            row = (secrets.token_hex(4), socket.gethostname() or "localhost")
            db.execute("INSERT INTO push_store (id, store, host) VALUES (1, ?, ?)", row)
        return {"instance": str(row[1]), "spool": str(row[0])}

    def _prune(self, db: sqlite3.Connection) -> None:
        """Forget applied marks of records the spool no longer holds for this sink (they can
        never come back). Without the spool's tables (a file of its own), keep them all."""
        try:
            found = db.execute("SELECT id FROM sinks WHERE key = ?", (self.key,)).fetchone()
        except sqlite3.OperationalError:
            return
        if found is None:
            return
        db.execute(
            "DELETE FROM push_applied WHERE gateway = ? AND record_id NOT IN "
            "(SELECT record_id FROM deliveries WHERE sink = ?)",
            (self.key, found[0]),
        )

    def apply(
        self, batch: Sequence[tuple[int, SpoolRecord]]
    ) -> tuple[list[Row], dict[str, str], dict[int, str]]:
        """Add the records not applied yet to the totals (one transaction); return the
        totals, the grouping key and the records that cannot be counted (id → why)."""
        rejected: dict[int, str] = {}
        with self._tx() as db:
            group = self._group(db)
            self._prune(db)
            for record_id, record in batch:
                done = db.execute(
                    "SELECT 1 FROM push_applied WHERE gateway = ? AND record_id = ?",
                    (self.key, record_id),
                ).fetchone()
                if done:
                    continue
                try:
                    rows = increments(_result_of(record))
                except Exception as exc:  # noqa: BLE001 - this record is the problem
                    rejected[record_id] = f"{type(exc).__name__}: {exc}"
                    continue
                db.executemany(
                    "INSERT INTO push_totals (gateway, metric, labels, le, value) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (gateway, metric, labels, le) "
                    "DO UPDATE SET value = value + excluded.value",
                    [(self.key, *row) for row in rows],
                )
                db.execute(
                    "INSERT INTO push_applied (gateway, record_id) VALUES (?, ?)",
                    (self.key, record_id),
                )
            totals = db.execute(
                "SELECT metric, labels, le, value FROM push_totals WHERE gateway = ?",
                (self.key,),
            ).fetchall()
        return totals, group, rejected

    # ------------------------------------------------------------------ Sink

    def write(self, batch: Sequence[tuple[int, SpoolRecord]]) -> WriteResult:
        from ..trace.drain import WriteResult
        from ..trace.targets import scrub, url_secrets

        totals, group, rejected = self.apply(batch)
        counted = [record_id for record_id, _ in batch if record_id not in rejected]
        try:
            self.push(totals, group)
        except Exception as exc:  # noqa: BLE001 - the gateway is down: the drainer retries
            error = scrub(f"{type(exc).__name__}: {exc}", url_secrets(self.gateway))
            return WriteResult(failed=dict.fromkeys(counted, error), rejected=rejected)
        return WriteResult(delivered=counted, rejected=rejected)

    def push(self, totals: Sequence[tuple[str, str, str, float]], group: dict[str, str]) -> None:
        """PUT ``totals`` as the whole content of the group (replacing what it held)."""
        from prometheus_client import CollectorRegistry, push_to_gateway

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Totals(totals))  # type: ignore[arg-type]
        url, handler = _auth(self.gateway)
        push_to_gateway(
            url,
            job=self.job,
            registry=registry,
            grouping_key=group,
            timeout=self.timeout,
            handler=handler,
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _result_of(record: SpoolRecord) -> RunResult:
    from ...run.result import RunResult

    result = record.data.get("result") if record.kind == "run" else None
    if not isinstance(result, RunResult):
        raise ValueError(f"a {record.kind!r} spool record without a run result")
    return result


def _auth(gateway: str) -> tuple[str, Callable[..., Any]]:
    """The URL without its user info, and a handler that sends that as HTTP basic auth."""
    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urllib.parse.urlsplit(gateway if "://" in gateway else "http://" + gateway)
    if parts.username is None:
        return gateway, default_handler
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    username = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")

    def handler(url: str, method: str, timeout: float | None, headers: Any, data: bytes) -> Any:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return url, handler

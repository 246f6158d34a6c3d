"""``report quality``: per judge and node, runs judged, pass rate, mean and p10 score, by day.

The judges' verdicts are MLflow feedback assessments (``observe.trace.judge_spans``): name =
judge, ``aggregate_value`` = the score (pass/fail: 1 / 0), metadata ``node`` and ``passed``.
On a SQL store one ``GROUP BY`` over MLflow's ``assessments`` table counts verdicts per
(judge, node, UTC day, score, passed), which is enough for every figure: the mean and the
10th percentile are exact from the counts of each distinct score (judges give few distinct
scores). On SQLite the ``ca_report_judges`` index covers the query (``store.REPORT_INDEXES``,
named with ``INDEXED BY`` when the store has it: without statistics SQLite would pick MLflow's
index on ``assessment_type``). On PostgreSQL the query groups by the metadata's text, which
Python parses once per distinct text (``raw_metadata``: our judges' metadata takes a few
dozen values), and ``ca_report_judges`` (``store.POSTGRES_REPORT_INDEXES``) covers it for an
index-only scan of the judge results when the planner finds that cheaper than the table.
Other stores: ``search_traces``, the same counts in Python.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .model import Filters
from .store import (
    JUDGE_WHERE,
    PG_JUDGE_WHERE,
    SQLITE_JUDGE_NODE,
    SQLITE_JUDGE_PASSED,
)

DAY_MS = 86_400_000


@dataclass
class JudgeRow:
    judge: str
    node: str | None  # None: the final outputs
    runs: int = 0
    passed: int = 0
    mean: float | None = None
    p10: float | None = None
    by_day: list[dict[str, Any]] = field(default_factory=list)  # {day, runs, pass_rate, mean}

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.runs if self.runs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "node": self.node,
            "runs": self.runs,
            "passed": self.passed,
            "pass_rate": self.pass_rate,
            "mean": self.mean,
            "p10": self.p10,
            "by_day": self.by_day,
        }


@dataclass
class QualityReport:
    tracking_uri: str
    source: str
    filters: Filters
    judge: str | None
    rows: list[JudgeRow]

    @property
    def runs(self) -> int:
        return max((r.runs for r in self.rows), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "source": self.source,
            "filters": self.filters.to_dict(),
            "judge": self.judge,
            "judges": [r.to_dict() for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["judge", "node", "day", "runs", "pass_rate", "mean"])
        for row in self.rows:
            writer.writerow([row.judge, row.node or "", "", row.runs, row.pass_rate, row.mean])
            for day in row.by_day:
                writer.writerow(
                    [
                        row.judge,
                        row.node or "",
                        day["day"],
                        day["runs"],
                        day["pass_rate"],
                        day["mean"],
                    ]
                )
        return out.getvalue()


# (judge, node, day, score, passed) -> verdicts
Counts = dict[tuple[str, str | None, int, float | None, bool], int]


def build_rows(counts: Counts) -> list[JudgeRow]:
    groups: dict[tuple[str, str | None], dict[tuple[int, float | None, bool], int]] = defaultdict(
        dict
    )
    for (judge, node, day, score, passed), n in counts.items():
        cell = groups[(judge, node)]
        cell[(day, score, passed)] = cell.get((day, score, passed), 0) + n
    rows = []
    for (judge, node), cells in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        row = JudgeRow(judge, node)
        scores: dict[float, int] = defaultdict(int)
        days: dict[int, list[int | float]] = defaultdict(lambda: [0, 0, 0.0, 0])
        for (day, score, passed), n in cells.items():
            row.runs += n
            row.passed += n if passed else 0
            entry = days[day]
            entry[0] += n
            entry[1] += n if passed else 0
            if score is not None:
                scores[score] += n
                entry[2] += score * n
                entry[3] += n
        total = sum(scores.values())
        if total:
            row.mean = sum(s * n for s, n in scores.items()) / total
            row.p10 = _percentile(scores, 0.10)
        for day in sorted(days):
            runs, hits, score_sum, scored = days[day]
            row.by_day.append(
                {
                    "day": (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat(),
                    "runs": runs,
                    "pass_rate": hits / runs if runs else None,
                    "mean": score_sum / scored if scored else None,
                }
            )
        rows.append(row)
    return rows


def _percentile(scores: dict[float, int], q: float) -> float:
    """The ``q`` quantile (nearest rank) of a score distribution given as counts."""
    import math

    total = sum(scores.values())
    rank = max(1, math.ceil(q * total))
    seen = 0
    for score in sorted(scores):
        seen += scores[score]
        if seen >= rank:
            return score
    return max(scores)


def _passed(value: Any) -> bool:
    return str(value).lower() == "true"


def raw_metadata(text: str | None) -> tuple[str | None, bool]:
    """``(node, passed)`` of a verdict's metadata JSON. On PostgreSQL the query groups by the
    metadata text and this parses each distinct text once: parsing it in SQL, once per
    verdict, is most of the query's time (2-4x; the planner does not count it)."""
    try:
        meta = json.loads(text or "{}")
    except ValueError:
        return None, False
    if not isinstance(meta, dict):
        return None, False
    return (str(meta["node"]) if meta.get("node") else None), _passed(meta.get("passed"))


# --------------------------------------------------------------------------- SQL


@cache
def judges_indexed() -> type:
    """A ``TableClause`` read ``INDEXED BY ca_report_judges`` on SQLite (SQLAlchemy has no
    table hints for SQLite); made on first use: SQLAlchemy is an extra."""
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql.expression import TableClause

    class JudgesIndexed(TableClause):
        inherit_cache = True

    @compiles(JudgesIndexed)
    def _plain(element: Any, compiler: Any, **kw: Any) -> str:
        return str(compiler.visit_table(element, **kw))

    @compiles(JudgesIndexed, "sqlite")
    def _indexed(element: Any, compiler: Any, **kw: Any) -> str:
        text = str(compiler.visit_table(element, **kw))
        return f"{text} INDEXED BY ca_report_judges" if kw.get("asfrom") else text

    return JudgesIndexed


def sql_counts(uri: str, filters: Filters, judge: str | None) -> Counts:
    from . import indexes
    from .sql import _Selection
    from .store import (
        check_revision,
        check_store,
        connect,
        experiment_ids,
        sa_module,
        table_names,
        tables,
    )

    sa = sa_module()
    t = tables(sa)
    counts: Counts = {}
    with connect(uri) as conn:
        check_store(conn, uri, table_names(conn))
        check_revision(conn, uri)
        ids = experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return counts
        sel = _Selection(sa, conn, t, filters, ids, all_ours=True)
        dialect = conn.dialect.name
        columns = (
            sa.column("name", sa.String),
            sa.column("trace_id", sa.String),
            sa.column("experiment_id", sa.Integer),
            sa.column("trace_timestamp_ms", sa.BigInteger),
            sa.column("aggregate_value", sa.Float),
            sa.column("assessment_metadata", sa.Text),
            sa.column("assessment_type", sa.String),
        )
        if dialect == "sqlite" and "ca_report_judges" in indexes.existing(conn):
            a = judges_indexed()("assessments", *columns)
        else:
            a = sa.table("assessments", *columns)
        meta = a.c.assessment_metadata
        # the index's expressions and conditions, verbatim (a planner matches them as written)
        if dialect == "sqlite":
            node, passed = (
                sa.literal_column(SQLITE_JUDGE_NODE),
                sa.literal_column(SQLITE_JUDGE_PASSED),
            )
            where = [sa.text(JUDGE_WHERE)]
        elif dialect == "postgresql":  # grouped by the metadata text: see raw_metadata
            node, passed = meta, None
            where = [sa.text(PG_JUDGE_WHERE)]
        else:
            node = sa.func.json_unquote(sa.func.json_extract(meta, "$.node"))
            passed = sa.func.json_unquote(sa.func.json_extract(meta, "$.passed"))
            where = [a.c.assessment_type == "feedback", meta.like('%"on_fail"%')]  # ours
        day = a.c.trace_timestamp_ms // DAY_MS  # integer division (a cast would round)
        if dialect == "sqlite":
            day = sa.literal_column(f"trace_timestamp_ms / {DAY_MS}")
        where.append(a.c.experiment_id.in_(ids))
        if judge is not None:
            where.append(a.c.name == judge)
        if filters.start_ms is not None:
            where.append(a.c.trace_timestamp_ms >= filters.start_ms)
        if filters.end_ms is not None:
            where.append(a.c.trace_timestamp_ms < filters.end_ms)
        if filters.workflow or filters.status or filters.tags or filters.batch:
            ti = t["trace_info"].c
            where.append(a.c.trace_id.in_(sa.select(ti.request_id).where(*sel.trace_conds)))
        groups = [a.c.name, node, day, a.c.aggregate_value]
        if passed is not None:
            groups.append(passed)
        query = (
            sa.select(
                a.c.name,
                node.label("node"),
                day.label("day"),
                a.c.aggregate_value,
                (passed if passed is not None else sa.null()).label("passed"),
                sa.func.count().label("n"),
            )
            .select_from(a)
            .where(*where)
            .group_by(*groups)
        )
        parsed: dict[str, tuple[str | None, bool]] = {}
        for name, node_value, day_value, score, passed_value, n in conn.execute(query):
            if passed is None:  # node_value: the metadata's text
                found = parsed.get(node_value)
                if found is None:
                    found = parsed[node_value] = raw_metadata(node_value)
                node_value, was_passed = found
            else:
                was_passed = _passed(passed_value)
            key = (
                str(name),
                node_value or None,
                int(day_value),
                None if score is None else float(score),
                was_passed,
            )
            counts[key] = counts.get(key, 0) + int(n)
    return counts


# --------------------------------------------------------------------------- REST


def rest_counts(uri: str, filters: Filters, judge: str | None) -> Counts:
    from .rest import _client, _experiment_ids, search

    client = _client(uri)
    ids = _experiment_ids(client, uri, filters.experiment)
    counts: Counts = {}
    if ids:
        add_assessments(counts, search(client, ids, filters, spans=False), filters, judge)
    return counts


def add_assessments(
    counts: Counts, traces: Iterable[Any], filters: Filters, judge: str | None
) -> None:
    wanted = dict(filters.tags)
    for trace in traces:
        info = trace.info
        if "ca.workflow" not in info.tags:
            continue
        if wanted and any(info.tags.get(k) != v for k, v in wanted.items()):
            continue
        day = int(info.request_time // DAY_MS)
        for a in info.assessments or []:
            meta = a.metadata or {}
            if "on_fail" not in meta or a.feedback is None:
                continue
            if judge is not None and a.name != judge:
                continue
            value = a.feedback.value
            score = None
            if isinstance(value, bool):
                score = 1.0 if value else 0.0
            elif isinstance(value, int | float):
                score = float(value)
            key = (a.name, meta.get("node") or None, day, score, _passed(meta.get("passed")))
            counts[key] = counts.get(key, 0) + 1


def quality_report(
    tracking_uri: str,
    *,
    judge: str | None = None,
    experiment: str | None = None,
    workflow: str | None = None,
    start: Any = None,
    end: Any = None,
    status: str | None = None,
    tags: dict[str, str] | None = None,
    batch: str | None = None,
) -> QualityReport:
    from ..trace.targets import mask_url, resolve_tracking_uri
    from .reports import make_filters, store_kind
    from .store import UnknownSchema

    uri = resolve_tracking_uri(tracking_uri)
    filters = make_filters(experiment, workflow, start, end, status, tags, batch)
    source = "assessments"
    if store_kind(uri) == "sql":
        try:
            counts = sql_counts(uri, filters, judge)
        except UnknownSchema:
            counts, source = rest_counts(uri, filters, judge), "search_traces"
    else:
        counts, source = rest_counts(uri, filters, judge), "search_traces"
    return QualityReport(mask_url(uri), source, filters, judge, build_rows(counts))

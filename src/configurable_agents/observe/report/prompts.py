"""``report prompts``: registry prompt versions side by side (the design's prompt-evolution
comparison): per prompt name and version, the runs that used it, the nodes that ran on it
(visits, tokens, cost, latency of those node spans), and each judge's results on those runs.

Where the numbers come from: the AGENT spans' ``node.prompt_version`` (``name/3``, written by
the trace writer for a node with ``prompt_ref``) for runs, tokens, cost and latency; the judge
results (``judged``) of the traces MLflow links to the version (``entity_associations``, the
link behind the UI's "linked prompts"). SQL stores: two GROUP BY queries (the SQLite report
index ``ca_report_prompt_spans`` holds the span values); other stores: ``search_traces``.

The better version: for each judge, the version with the highest mean is *better* when it has
at least ``min_runs`` judged runs, and its mean's 95% confidence interval lies above that of
every other version with ``min_runs`` judged runs. A version is named when it is better for at
least one judge and worse for none; otherwise no version is named ("no clear winner").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .judged import JudgeStats, feedback_value, passed_of, sql_aggregates, sql_conditions
from .model import Filters, to_pico

MIN_RUNS = 10


@dataclass
class VersionStats:
    prompt: str
    version: int
    runs: int = 0  # traces with a node on this version
    visits: int = 0  # node spans on it
    cost_pico: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_ns: int = 0
    nodes: set[str] = field(default_factory=set)
    judges: dict[str, JudgeStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        runs = max(self.runs, 1)
        return {
            "version": self.version,
            "usage_count": self.runs,
            "node_visits": self.visits,
            "nodes": sorted(self.nodes),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_cost_usd": round(self.cost_pico / 1e12, 12),
            "avg_tokens": round((self.input_tokens + self.output_tokens) / runs, 1),
            "avg_cost_usd": round(self.cost_pico / 1e12 / runs, 12),
            "avg_latency_ms": round(self.duration_ns / 1e6 / max(self.visits, 1), 3),
            "avg_quality_score": _quality(self),
            "judges": {name: j.to_dict() for name, j in sorted(self.judges.items())},
        }


def _quality(v: VersionStats) -> float | None:
    """The mean judge score when one judge judged these runs (the design's avg_quality_score);
    with several, see ``judges``."""
    if len(v.judges) != 1:
        return None
    (only,) = v.judges.values()
    return None if only.mean is None else round(only.mean, 4)


@dataclass
class PromptReport:
    tracking_uri: str
    filters: dict[str, Any]
    min_runs: int
    source: str
    prompts: dict[str, list[VersionStats]] = field(default_factory=dict)
    recommendations: dict[str, str] = field(default_factory=dict)
    better: dict[str, int | None] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(v.runs for versions in self.prompts.values() for v in versions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "filters": self.filters,
            "source": self.source,
            "min_runs": self.min_runs,
            "prompts": [
                {
                    "prompt_name": name,
                    "versions": [v.to_dict() for v in versions],
                    "better_version": self.better.get(name),
                    "recommendation": self.recommendations.get(name),
                }
                for name, versions in sorted(self.prompts.items())
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _split(label: str | None) -> tuple[str, int] | None:
    if not label or "/" not in label:
        return None
    name, _, version = label.rpartition("/")
    try:
        return name, int(version)
    except ValueError:
        return None


# --------------------------------------------------------------------------- collecting


def _sql(uri: str, filters: Filters, prompt: str | None) -> dict[tuple[str, int], VersionStats]:
    from .sql import _Selection
    from .store import (
        check_revision,
        check_store,
        connect,
        experiment_ids,
        json_text,
        node_dim_exprs,
        pico,
        sa_module,
        table_names,
        tables,
        token_exprs,
    )

    sa = sa_module()
    t = tables(sa)
    out: dict[tuple[str, int], VersionStats] = {}
    with connect(uri) as conn:
        names = table_names(conn)
        check_store(conn, uri, names)
        check_revision(conn, uri)
        ids = experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return out
        sel = _Selection(sa, conn, t, filters, ids)
        sc = t["spans"].c
        version, _, _ = node_dim_exprs(sa, conn.dialect.name, sc.content)
        tin, tout = token_exprs(sa, conn.dialect.name, sc.content, chat=False)
        query = (
            sa.select(
                version,
                sc.name,
                sa.func.count(sa.distinct(sc.trace_id)),
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(pico(sa, sel.dialect, sc.total_cost)), 0),
                sa.func.coalesce(sa.func.sum(tin), 0),
                sa.func.coalesce(sa.func.sum(tout), 0),
                sa.func.coalesce(sa.func.sum(sc.duration_ns), 0),
            )
            .where(*sel.spans_where("AGENT"), version.isnot(None))
            .group_by(version, sc.name)
        )
        per_version_runs: dict[tuple[str, int], Any] = {}
        for raw, node, runs, visits, cost, i, o, ns in conn.execute(query):
            key = _split(json_text(raw))
            if key is None or (prompt is not None and key[0] != prompt):
                continue
            v = out.setdefault(key, VersionStats(*key))
            v.nodes.add(node)
            v.visits += int(visits)
            v.cost_pico += int(cost)
            v.input_tokens += int(i or 0)
            v.output_tokens += int(o or 0)
            v.duration_ns += int(ns or 0)
            per_version_runs[key] = max(per_version_runs.get(key, 0), int(runs))
        if per_version_runs and any(len(v.nodes) > 1 for v in out.values()):
            # a version used by several nodes: count each run once
            runs_query = (
                sa.select(version, sa.func.count(sa.distinct(sc.trace_id)))
                .where(*sel.spans_where("AGENT"), version.isnot(None))
                .group_by(version)
            )
            for raw, runs in conn.execute(runs_query):
                key = _split(json_text(raw))
                if key in out:
                    per_version_runs[key] = int(runs)
        for key, runs in per_version_runs.items():
            out[key].runs = runs
        if out and "assessments" in names and "entity_associations" in names:
            a, ea = t["assessments"].alias("a"), t["entity_associations"].alias("ea")
            conds = sql_conditions(sa, a)
            if sel.trace_conds:
                ti = t["trace_info"].c
                conds.append(a.c.trace_id.in_(sa.select(ti.request_id).where(*sel.trace_conds)))
            judged = (
                sa.select(ea.c.destination_id, a.c.name, *sql_aggregates(sa, a))
                .select_from(
                    a.join(
                        ea,
                        sa.and_(
                            ea.c.source_type == "trace",
                            ea.c.source_id == a.c.trace_id,
                            ea.c.destination_type == "prompt_version",
                        ),
                    )
                )
                .where(*conds, ea.c.destination_id.in_([f"{n}/{v}" for n, v in out]))
                .group_by(ea.c.destination_id, a.c.name)
            )
            for label, judge, *row in conn.execute(judged):
                key = _split(label)
                if key in out:
                    out[key].judges.setdefault(judge, JudgeStats()).merge(tuple(row))
    return out


def _rest(uri: str, filters: Filters, prompt: str | None) -> dict[tuple[str, int], VersionStats]:
    from .rest import _client, _experiment_ids, search

    client = _client(uri)
    ids = _experiment_ids(client, uri, filters.experiment)
    out: dict[tuple[str, int], VersionStats] = {}
    wanted = dict(filters.tags)
    for trace in search(client, ids, filters, spans=True) if ids else []:
        info = trace.info
        if "ca.workflow" not in info.tags or any(info.tags.get(k) != v for k, v in wanted.items()):
            continue
        used: set[tuple[str, int]] = set()
        for span in trace.data.spans:
            if span.span_type != "AGENT":
                continue
            key = _split(span.attributes.get("node.prompt_version"))
            if key is None or (prompt is not None and key[0] != prompt):
                continue
            v = out.setdefault(key, VersionStats(*key))
            cost = span.attributes.get("mlflow.llm.cost")
            v.nodes.add(span.name)
            v.visits += 1
            v.cost_pico += to_pico(cost.get("total_cost") if isinstance(cost, dict) else None)
            v.input_tokens += int(span.attributes.get("node.input_tokens") or 0)
            v.output_tokens += int(span.attributes.get("node.output_tokens") or 0)
            v.duration_ns += int(span.end_time_ns or 0) - int(span.start_time_ns or 0)
            used.add(key)
        linked = {
            (p.get("name"), int(p.get("version")))
            for p in json.loads(info.tags.get("mlflow.linkedPrompts") or "[]")
        }
        for key in used:
            out[key].runs += 1
        for assessment in info.assessments or []:
            found = feedback_value(assessment)
            if found is None:
                continue
            for key in used & linked:
                stats = out[key].judges.setdefault(assessment.name, JudgeStats())
                stats.add(found[0], found[1], passed_of(assessment.metadata))
    return out


# --------------------------------------------------------------------------- the report


def prompt_report(
    tracking_uri: str,
    *,
    prompt: str | None = None,
    min_runs: int = MIN_RUNS,
    backend: str | None = None,
    **filters: Any,
) -> PromptReport:
    """Prompt versions side by side (see the module docstring). ``filters``: those of
    ``cost_report`` (experiment, workflow, start, end, status, tags, batch)."""
    from ..trace.targets import mask_url, resolve_tracking_uri
    from .reports import make_filters, store_kind
    from .store import UnknownSchema

    uri = resolve_tracking_uri(tracking_uri)
    f = make_filters(**filters)
    source = "sql"
    if (backend or store_kind(uri)) == "sql":
        try:
            found = _sql(uri, f, prompt)
        except UnknownSchema:
            source, found = "search_traces", _rest(uri, f, prompt)
    else:
        source, found = "search_traces", _rest(uri, f, prompt)
    report = PromptReport(mask_url(uri), f.to_dict(), min_runs, source)
    for (name, _), stats in sorted(found.items()):
        report.prompts.setdefault(name, []).append(stats)
    for name, versions in report.prompts.items():
        report.better[name], report.recommendations[name] = better_version(versions, min_runs)
    return report


def better_version(versions: list[VersionStats], min_runs: int) -> tuple[int | None, str]:
    """The version the judges' numbers show better, and why (see the module docstring)."""
    if len(versions) < 2:
        return None, "one version only"
    wins: dict[int, list[str]] = {}
    losses: set[int] = set()
    judges = sorted({j for v in versions for j in v.judges})
    for judge in judges:
        enough = [v for v in versions if judge in v.judges and v.judges[judge].count >= min_runs]
        if len(enough) < 2:
            continue
        enough.sort(key=lambda v: v.judges[judge].mean or 0.0, reverse=True)
        best, rest = enough[0], enough[1:]
        low = best.judges[judge].interval()
        highs = [v.judges[judge].interval() for v in rest]
        if low and all(h and low[0] > h[1] for h in highs):
            runner = rest[0].judges[judge]
            wins.setdefault(best.version, []).append(
                f"{judge} {best.judges[judge].mean:.3g} vs {runner.mean:.3g} "
                f"(v{rest[0].version}; n={best.judges[judge].count} vs {runner.count})"
            )
            losses.update(v.version for v in rest)
    if not wins:
        judged = any(v.judges for v in versions)
        if not judged:
            return None, "no judge results on these runs: nothing to compare quality on"
        return None, (
            f"no clear winner: no version's 95% interval is above the others' with at least "
            f"{min_runs} judged runs each"
        )
    candidates = [v for v in wins if v not in losses]
    if len(candidates) != 1:
        return None, "no clear winner: the judges disagree"
    (winner,) = candidates
    best = next(v for v in versions if v.version == winner)
    others = [v for v in versions if v.version != winner and v.runs]
    cost = ""
    if others and best.runs:
        base = sum(v.cost_pico for v in others) / max(sum(v.runs for v in others), 1)
        mine = best.cost_pico / best.runs
        if base:
            cost = f", at {100 * (mine - base) / base:+.1f}% cost per run"
    return winner, f"v{winner} is better: " + "; ".join(wins[winner]) + cost

"""``report costs --recommend``: the design's "model_switch" advice. For each node and the
model it ran on, what the same tokens would have cost on the cheaper models of the same
provider in ``genai-prices``, with the node's judge results beside it when there are any.

* The node's tokens: its AGENT spans' ``node.input_tokens`` / ``node.output_tokens``, per
  (node, provider, model); each candidate is priced for the average visit's tokens, times the
  visits (tiered prices depend on the size of a request, not on the total).
* Candidates: the models genai-prices lists under the provider it prices the current model
  with (the ``test`` provider is priced as its model names), of the same family (the first
  word of the id: ``gemini``, ``gpt``, ``claude``, ...), not deprecated, not a speech, image,
  embedding, live or preview variant, cheaper for these tokens. A model without a price is
  never suggested, and a node whose model has no price (``local``, ``ollama``, unknown names)
  gets no advice.
* Judge results beside it: those whose ``span_id`` is one of the node's spans (``judged``),
  per node (the same for each model the node ran on).

Savings are what the selected runs would have saved; quality on the cheaper model is unknown
until it is tried (``configurable-agents batch compare --set node.llm.model=...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .judged import JudgeStats, feedback_value, passed_of, sql_aggregates, sql_conditions
from .model import Filters, to_pico

MAX_SUGGESTIONS = 3
_VARIANTS = re.compile(
    r"tts|image|embedding|live|vision|audio|realtime|transcribe|robotics|search|preview|"
    r"instruct|moderation|omni|banana|computer-use|codex|dall-e|whisper"
)


@dataclass
class NodeModel:
    node: str
    provider: str
    model: str
    visits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_pico: int = 0
    judges: dict[str, JudgeStats] = field(default_factory=dict)
    priced_usd: float | None = None  # these tokens at the current model's genai-prices price
    suggestions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "model_switch",
            "node": self.node,
            "provider": self.provider,
            "current_model": self.model,
            "visits": self.visits,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "current_cost_usd": round(self.cost_pico / 1e12, 12),
            "current_cost_at_list_price_usd": self.priced_usd,
            "suggestions": self.suggestions,
            "judges": {name: j.to_dict() for name, j in sorted(self.judges.items())},
        }


def _family(model_id: str) -> str:
    return re.split(r"[-_.:/]", model_id.lower(), maxsplit=1)[0]


@lru_cache(maxsize=128)
def _priced_provider(model: str, provider: str) -> Any:
    """genai-prices' (provider, model info) for our model, or None when it has no price."""
    from genai_prices import Usage, calc_price

    from ...pricing import _PRICE_PROVIDER, LOCAL_PROVIDERS

    if provider in LOCAL_PROVIDERS:
        return None
    try:
        found = calc_price(
            Usage(input_tokens=1, output_tokens=1), model, provider_id=_PRICE_PROVIDER.get(provider)
        )
    except LookupError:
        return None
    return found.provider, found.model


def _price(info: Any, provider: Any, tin: int, tout: int) -> float | None:
    from genai_prices import Usage

    try:
        return float(
            info.calc_price(Usage(input_tokens=tin, output_tokens=tout), provider).total_price
        )
    except Exception:  # noqa: BLE001 - a model genai-prices cannot price for this usage
        return None


def advise(row: NodeModel, limit: int = MAX_SUGGESTIONS) -> NodeModel:
    """Fill ``row.priced_usd`` and ``row.suggestions`` (see the module docstring)."""
    found = _priced_provider(row.model, row.provider)
    if found is None or not row.visits:
        return row
    provider, current = found
    tin, tout = row.input_tokens // row.visits, row.output_tokens // row.visits
    now = _price(current, provider, tin, tout)
    if now is None:
        return row
    row.priced_usd = round(now * row.visits, 12)
    family = _family(current.id)
    cheaper = []
    for info in provider.models:
        if info.id == current.id or info.deprecated or _family(info.id) != family:
            continue
        if _VARIANTS.search(info.id):
            continue
        cost = _price(info, provider, tin, tout)
        if cost is None or cost >= now:
            continue
        cheaper.append((cost, info.id))
    for cost, model_id in sorted(cheaper)[:limit]:
        total = cost * row.visits
        row.suggestions.append(
            {
                "suggested_model": model_id,
                "estimated_cost_usd": round(total, 12),
                "estimated_savings_usd": round(row.priced_usd - total, 12),
                "savings_percentage": round(100 * (now - cost) / now, 1),
                "quality_impact": "unknown: not run on it yet",
            }
        )
    return row


# --------------------------------------------------------------------------- collecting


def node_models(uri: str, filters: Filters, kind: str) -> list[NodeModel]:
    rows = _sql(uri, filters) if kind == "sql" else _rest(uri, filters)
    return [advise(r) for r in sorted(rows.values(), key=lambda r: (r.node, r.model))]


def _sql(uri: str, filters: Filters) -> dict[tuple[str, str, str], NodeModel]:
    from .sql import _Selection
    from .store import (
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
    out: dict[tuple[str, str, str], NodeModel] = {}
    with connect(uri) as conn:
        names = table_names(conn)
        check_store(conn, uri, names)
        ids = experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return out
        sel = _Selection(sa, conn, t, filters, ids)
        spans = t["spans"]
        _, provider, model = node_dim_exprs(sa, conn.dialect.name, spans.c.content)
        tin, tout = token_exprs(sa, conn.dialect.name, spans.c.content, chat=False)
        query = (
            sa.select(
                spans.c.name,
                provider,
                model,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(pico(sa, sel.dialect, spans.c.total_cost)), 0),
                sa.func.coalesce(sa.func.sum(tin), 0),
                sa.func.coalesce(sa.func.sum(tout), 0),
            )
            .where(*sel.spans_where("AGENT"))
            .group_by(provider, model, spans.c.name)  # the index's order
        )
        for node, p, m, visits, cost, i, o in conn.execute(query):
            key = (node, json_text(p) or "", json_text(m) or "")
            row = out.setdefault(key, NodeModel(*key))
            row.visits += int(visits)
            row.cost_pico += int(cost)
            row.input_tokens += int(i or 0)
            row.output_tokens += int(o or 0)
        if out and "assessments" in names:
            a = t["assessments"].alias("a")
            s = spans.alias("s")
            conds = [*sql_conditions(sa, a), a.c.span_id.isnot(None)]
            if sel.trace_conds:
                ti = t["trace_info"].c
                conds.append(a.c.trace_id.in_(sa.select(ti.request_id).where(*sel.trace_conds)))
            judged = (
                sa.select(s.c.name, a.c.name, *sql_aggregates(sa, a))
                .select_from(
                    a.join(s, sa.and_(s.c.trace_id == a.c.trace_id, s.c.span_id == a.c.span_id))
                )
                .where(*conds, s.c.type == sa.literal_column("'AGENT'"))
                .group_by(s.c.name, a.c.name)
            )
            for node, judge, *agg in conn.execute(judged):
                for key, row in out.items():  # a node's judges, whichever model it ran on
                    if key[0] == node:
                        row.judges.setdefault(judge, JudgeStats()).merge(tuple(agg))
    return out


def _rest(uri: str, filters: Filters) -> dict[tuple[str, str, str], NodeModel]:
    from .rest import _client, _experiment_ids, search

    client = _client(uri)
    ids = _experiment_ids(client, uri, filters.experiment)
    out: dict[tuple[str, str, str], NodeModel] = {}
    wanted = dict(filters.tags)
    for trace in search(client, ids, filters, spans=True) if ids else []:
        info = trace.info
        if "ca.workflow" not in info.tags or any(info.tags.get(k) != v for k, v in wanted.items()):
            continue
        by_span: dict[str, tuple[str, str, str]] = {}
        for span in trace.data.spans:
            if span.span_type != "AGENT":
                continue
            attrs = span.attributes
            key = (
                span.name,
                str(attrs.get("node.provider") or ""),
                str(attrs.get("node.model") or ""),
            )
            by_span[span.span_id] = key
            row = out.setdefault(key, NodeModel(*key))
            cost = attrs.get("mlflow.llm.cost")
            row.visits += 1
            row.cost_pico += to_pico(cost.get("total_cost") if isinstance(cost, dict) else None)
            row.input_tokens += int(attrs.get("node.input_tokens") or 0)
            row.output_tokens += int(attrs.get("node.output_tokens") or 0)
        for assessment in info.assessments or []:
            found = feedback_value(assessment)
            judged = by_span.get(getattr(assessment, "span_id", None) or "")
            if found is None or judged is None:
                continue
            for key, row in out.items():  # a node's judges, whichever model it ran on
                if key[0] == judged[0]:
                    stats = row.judges.setdefault(assessment.name, JudgeStats())
                    stats.add(found[0], found[1], passed_of(assessment.metadata))
    return out

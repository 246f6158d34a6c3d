"""Cost by an attribution tag (``report costs --by user|team|tenant|cost_center``): one row
per value of the trace tag, runs without it under ``(none)``. SQL stores: one GROUP BY on
MLflow's tables; other stores: ``search_traces`` and a loop."""

from __future__ import annotations

from typing import Any

from .model import Filters, to_pico

ATTRIBUTION_TAGS = ("user", "team", "tenant", "cost_center")
NONE = "(none)"


def _row(value: str, runs: int, cost_pico: int, tokens: int) -> dict[str, Any]:
    return {
        "value": value,
        "runs": runs,
        "total_cost": round(cost_pico / 1e12, 12),
        "total_tokens": tokens,
    }


def cost_by_tag(uri: str, tag: str, filters: Filters) -> list[dict[str, Any]]:
    from .reports import store_kind

    if store_kind(uri) == "sql":
        return _sql(uri, tag, filters)
    return _rest(uri, tag, filters)


def _sql(uri: str, tag: str, filters: Filters) -> list[dict[str, Any]]:
    from .sql import _Selection
    from .store import check_store, connect, experiment_ids, pico, sa_module, tables

    sa = sa_module()
    t = tables(sa)
    with connect(uri) as conn:
        check_store(conn, uri)
        ids = experiment_ids(conn, uri, t, filters.experiment)
        if not ids:
            return []
        sel = _Selection(sa, conn, t, filters, ids)
        ti, tags = t["trace_info"].c, t["trace_tags"].alias("by_tag")
        value = sa.func.coalesce(tags.c.value, NONE)
        query = (
            sa.select(
                value,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(pico(sa, sel.dialect, ti.total_cost)), 0),
                sa.func.coalesce(sa.func.sum(ti.total_tokens), 0),
            )
            .select_from(
                t["trace_info"].outerjoin(
                    tags, sa.and_(tags.c.request_id == ti.request_id, tags.c.key == tag)
                )
            )
            .where(*sel.trace_conds)
            .group_by(value)
        )
        rows = [_row(str(v), int(n), int(c), int(tok)) for v, n, c, tok in conn.execute(query)]
    return sorted(rows, key=lambda r: (-r["total_cost"], r["value"]))


def _rest(uri: str, tag: str, filters: Filters) -> list[dict[str, Any]]:
    from .rest import _client, _experiment_ids, search

    client = _client(uri)
    ids = _experiment_ids(client, uri, filters.experiment)
    sums: dict[str, list[int]] = {}
    wanted = dict(filters.tags)
    for trace in search(client, ids, filters, spans=False) if ids else []:
        info = trace.info
        if "ca.workflow" not in info.tags:
            continue
        if any(info.tags.get(k) != v for k, v in wanted.items()):
            continue
        entry = sums.setdefault(info.tags.get(tag, NONE), [0, 0, 0])
        entry[0] += 1
        entry[1] += to_pico((info.cost or {}).get("total_cost"))
        entry[2] += int((info.token_usage or {}).get("total_tokens") or 0)
    rows = [_row(v, *e) for v, e in sums.items()]
    return sorted(rows, key=lambda r: (-r["total_cost"], r["value"]))

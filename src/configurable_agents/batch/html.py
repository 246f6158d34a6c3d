"""The HTML summary of ``batch compare --html FILE``: the aggregates side by side, the rows
that changed, and Plotly charts (success rate per variant, cost and latency distributions).
One self-contained file: plotly.js is inlined, so it opens offline."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..exceptions import MissingExtraError
from .compare import Comparison

COLORS = {"baseline": "#636efa", "candidate": "#ef553b"}
CHART_WIDTH, CHART_HEIGHT = 440, 360


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
    except ImportError:
        raise MissingExtraError("plotly", "batch", "the HTML summary of batch compare") from None
    return go, pio


def _fmt(value: float, name: str) -> str:
    if name == "success rate":
        return f"{value:.1%}"
    if "USD" in name:
        return f"${value:.6f}"
    return f"{value:,.1f}"


def figures(comp: Comparison) -> list[Any]:
    go, _ = _plotly()
    names = ["baseline", "candidate"]
    rate = next(m for m in comp.metrics if m.name == "success rate")
    rates = go.Figure(
        go.Bar(
            x=names,
            y=[rate.baseline, rate.candidate],
            marker_color=[COLORS[n] for n in names],
            text=[f"{v:.1%}" for v in (rate.baseline, rate.candidate)],
            textposition="auto",
        )
    )
    rates.update_layout(
        title="Pass rate (rows succeeded)", yaxis={"tickformat": ".0%", "range": [0, 1]}
    )
    cost = go.Figure(
        [go.Box(y=comp.costs[n], name=n, marker_color=COLORS[n], boxmean=True) for n in names]
    )
    cost.update_layout(title="Cost per row (USD)", yaxis={"title": "USD"})
    latency = go.Figure(
        [
            go.Histogram(x=comp.latencies[n], name=n, marker_color=COLORS[n], opacity=0.6)
            for n in names
        ]
    )
    latency.update_layout(
        title="Latency per row (ms)",
        barmode="overlay",
        xaxis={"title": "ms"},
        yaxis={"title": "rows"},
    )
    for fig in (rates, cost, latency):
        fig.update_layout(
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
            margin={"l": 50, "r": 20, "t": 50, "b": 40},
            template="plotly_white",
        )
    return [rates, cost, latency]


def render(comp: Comparison) -> str:
    _, pio = _plotly()
    charts = [
        pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs="inline" if i == 0 else False,
            div_id=f"chart-{i}",
            default_width=f"{CHART_WIDTH}px",
            default_height=f"{CHART_HEIGHT}px",
            config={"displaylogo": False, "displayModeBar": False},
        )
        for i, fig in enumerate(figures(comp))
    ]
    rows = "".join(
        f"<tr><td>{html.escape(m.name)}</td><td>{_fmt(m.baseline, m.name)}</td>"
        f"<td>{_fmt(m.candidate, m.name)}</td><td class='better'>{m.better or '—'}</td></tr>"
        for m in comp.metrics
    )
    examples = "".join(
        f"<tr><td>{html.escape(json.dumps(e['row']))}</td><td>{html.escape(e['change'])}</td>"
        f"<td><code>{html.escape(json.dumps(e['baseline'], default=str)[:300])}</code></td>"
        f"<td><code>{html.escape(json.dumps(e['candidate'], default=str)[:300])}</code></td></tr>"
        for e in comp.examples
    )
    b, c = comp.baseline, comp.candidate
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>batch compare: {html.escape(b.workflow)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0 24px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.better {{ font-weight: bold; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
code {{ font-size: 12px; }}
</style></head><body>
<h1>Baseline vs candidate</h1>
<p><b>baseline</b>: {html.escape(comp.baseline_label)} (batch {html.escape(b.batch_id)})<br>
<b>candidate</b>: {html.escape(comp.candidate_label)} (batch {html.escape(c.batch_id)})<br>
{comp.rows:,} rows compared: {comp.fixed:,} fixed, {comp.broken:,} broken,
{comp.outputs_differ:,} with different outputs, {comp.both_failed:,} failed in both.</p>
<p id="verdict">Better: <b>{html.escape(comp.verdict)}</b></p>
<table id="metrics"><tr><th>measure</th><th>baseline</th><th>candidate</th><th>better</th></tr>
{rows}</table>
<div class="charts">{"".join(f"<div>{ch}</div>" for ch in charts)}</div>
<h2>Rows that changed (first {len(comp.examples)})</h2>
<table id="examples"><tr><th>row</th><th>change</th><th>baseline</th><th>candidate</th></tr>
{examples}</table>
</body></html>
"""


def write_html(comp: Comparison, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(comp), encoding="utf-8")

"""The Grafana panel, query and variable builders the dashboards are made of
(grafana-foundation-sdk, imported when called), with our defaults: every panel and variable
reads the Prometheus data source chosen in ``$datasource``; heatmaps read ``le`` buckets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from grafana_foundation_sdk.builders.dashboard import Dashboard

__all__ = [
    "ALL",
    "DATASOURCE_UID",
    "bargauge_panel",
    "base_panel",
    "dashboard",
    "datasource_ref",
    "datasource_variable",
    "heatmap_panel",
    "label_variable",
    "stat_panel",
    "thresholds",
    "timeseries_panel",
]

DATASOURCE_UID = "${datasource}"
ALL = ".*"


class _Panel(Protocol):
    """What the SDK's panel builders (timeseries, stat, ...) have in common."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: Any) -> Self: ...
    def with_target(self, target: Any) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...
    def unit(self, unit: str) -> Self: ...


P = TypeVar("P", bound=_Panel)


def datasource_ref() -> Any:
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def promql(expr: str, legend: str = "__auto", *, instant: bool = False, ref: str = "A") -> Any:
    from grafana_foundation_sdk.builders import prometheus
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    query = (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref)
        .datasource({"type": "prometheus", "uid": DATASOURCE_UID})
    )
    if legend == "{{le}}":
        query = query.format(PromQueryFormat.HEATMAP)
    return query.instant() if instant else query.range()


def base_panel(
    panel: P,
    title: str,
    description: str,
    unit: str,
    *queries: Any,
    span: int = 12,
    height: int = 8,
) -> P:
    panel = (
        panel.title(title)
        .description(description)
        .datasource(datasource_ref())
        .unit(unit)
        .span(span)
        .height(height)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def thresholds(*steps: tuple[float | None, str]) -> Any:
    from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def stat_panel(
    title: str, description: str, unit: str, expr: str, *, decimals: int | None = None
) -> Any:
    from grafana_foundation_sdk.builders import common, stat
    from grafana_foundation_sdk.models.common import BigValueGraphMode

    panel = base_panel(
        stat.Panel(), title, description, unit, promql(expr, instant=True), span=6, height=4
    )
    panel = panel.graph_mode(BigValueGraphMode.NONE).reduce_options(
        common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def timeseries_panel(title: str, description: str, unit: str, *queries: Any, span: int = 12) -> Any:
    from grafana_foundation_sdk.builders import common, timeseries
    from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement

    return (
        base_panel(timeseries.Panel(), title, description, unit, *queries, span=span)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common.VizTooltipOptions().mode(_tooltip_all()))
    )


def _tooltip_all() -> Any:
    from grafana_foundation_sdk.models.common import TooltipDisplayMode

    return TooltipDisplayMode.MULTI


def heatmap_panel(title: str, description: str, expr: str, *, span: int = 24) -> Any:
    from grafana_foundation_sdk.builders import heatmap

    return base_panel(
        heatmap.Panel(), title, description, "s", promql(expr, "{{le}}"), span=span
    ).calculate(False)


def bargauge_panel(title: str, description: str, unit: str, expr: str, legend: str) -> Any:
    from grafana_foundation_sdk.builders import bargauge, common
    from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, VizOrientation

    return (
        base_panel(
            bargauge.Panel(), title, description, unit, promql(expr, legend, instant=True), span=12
        )
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def datasource_variable() -> Any:
    from grafana_foundation_sdk.builders.dashboard import DatasourceVariable

    return DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, query: str) -> Any:
    from grafana_foundation_sdk.builders.dashboard import QueryVariable
    from grafana_foundation_sdk.models.dashboard import (
        VariableOption,
        VariableRefresh,
        VariableSort,
    )

    return (
        QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(datasource_ref())
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def dashboard(uid: str, title: str, description: str, tag: str) -> Dashboard:
    """A dashboard with our defaults: last hour, 30 s refresh, shared crosshair, a link to
    the other dashboards tagged ``tag``, and the data source variable."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard, DashboardLink
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType

    return (
        Dashboard(f"Configurable Agents / {title}")
        .uid(uid)
        .description(description)
        .tags([tag])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            DashboardLink("Configurable Agents")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([tag])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(datasource_variable())
    )

"""Building blocks shared by the dashboards: data source reference, variables, panels.

Conventions: every dashboard's UID starts with ``fleetpulse-``; panels query one
InfluxQL data source whose UID comes from settings; fleet-wide views read only
the champion model's scores (``"role" = 'champion'``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from fleetpulse.dashboards.influxql import DATASOURCE_TYPE, InfluxQL

UID_PREFIX = "fleetpulse-"
TAGS = ["fleetpulse"]
CHAMPION = "\"role\" = 'champion'"
FLEET_FILTER = '"site" =~ /^$site$/ AND "device_model" =~ /^$device_model$/'
CURRENT = "24h"
"""Time range of "current state" panels (latest score per component, latest ticket counts): the worker
rescores an active device at least every 15 minutes, so one day holds every live score while these
panels scan a fraction of a week's points (a panel-level override of the dashboard range)."""


def ds_ref(uid: str) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)


def new_dashboard(uid_suffix: str, title: str, description: str, refresh: str = "1m") -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(UID_PREFIX + uid_suffix)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .refresh(refresh)
        .time("now-7d", "now")
        .editable()
    )


def tag_variable(
    name: str, label: str, measurement: str, key: str, ds: dm.DataSourceRef, *, where: str = "", multi: bool = True
) -> db.QueryVariable:
    """A drop-down of one tag's values; 'All' is the regex ``.*`` so queries use ``=~ /^$name$/``."""
    query = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"' + (f" WHERE {where}" if where else "")
    var = (
        db.QueryVariable(name)
        .label(label)
        .datasource(ds)
        .query(query)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        var = var.multi(True).include_all(True).all_value(".*").current(dm.VariableOption(text="All", value="$__all"))
    return var


def q(query: str, ref_id: str = "A", alias: str | None = None) -> InfluxQL:
    target = InfluxQL(" ".join(query.split())).ref_id(ref_id)
    return target.alias(alias) if alias else target


def row(title: str) -> db.Row:
    return db.Row(title)


def ts_panel(title: str, description: str, ds: dm.DataSourceRef, *targets: InfluxQL) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(ds)
        .height(8)
        .span(12)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def stat_panel(title: str, description: str, ds: dm.DataSourceRef, target: InfluxQL, unit: str = "short") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(ds)
        .height(4)
        .span(6)
        .unit(unit)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(target)
    )


def table_panel(title: str, description: str, ds: dm.DataSourceRef, target: InfluxQL) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(ds)
        .height(8)
        .span(12)
        .show_header(True)
        .with_target(target.table())
    )


def bars_panel(title: str, description: str, ds: dm.DataSourceRef, target: InfluxQL) -> bargauge.Panel:
    """Horizontal bars, one per series (e.g. per site): counts read at a glance."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(ds)
        .height(8)
        .span(8)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(target)
    )


def risk_thresholds() -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dm.Threshold(value=None, color="green"),
                dm.Threshold(value=0.3, color="yellow"),
                dm.Threshold(value=0.5, color="orange"),
                dm.Threshold(value=0.7, color="red"),
            ]
        )
    )

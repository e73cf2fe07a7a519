"""Fleet health overview: what IT support looks at first.

How many devices report, how many components are at risk and where (component,
site, hardware model), whether that is getting worse, and which devices to open
in the drill-down. "At risk" = the latest champion score of a component is at or
above the alert policy's raise threshold. Counts and trends come from the ``fleet`` and
``fleet_devices`` rollups (``fleetpulse dashboards rollup``, computed every few minutes
instead of by every viewer); the riskiest-components table reads the last 24 hours of scores,
the silent-devices table the rollup's ``silent_device`` snapshot from the ticket store.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from fleetpulse.dashboards.common import (
    CHAMPION,
    CURRENT,
    FLEET_FILTER,
    bars_panel,
    new_dashboard,
    q,
    risk_thresholds,
    row,
    stat_panel,
    table_panel,
    tag_variable,
    ts_panel,
)

UID = "fleet-health"

# Latest champion score per component in range: the inner query every "at risk" panel counts from.
_LATEST_RISK = (
    f'SELECT last("risk") AS "risk" FROM "risk" WHERE $timeFilter AND {CHAMPION} AND {FLEET_FILTER} '
    'GROUP BY "device_id", "component", "component_id", "site", "device_model"'
)


# Latest rollup point per (component, site, hardware model): see fleetpulse.dashboards.rollup.
_ROLLUP_GROUPS = '"component", "site", "device_model"'
ROLLUP_CURRENT = "1h"
"""The rollup runs every few minutes; a group missing for an hour has no scored component left."""
SILENT_CURRENT = "15m"
"""A few rollup runs: a device that reported again drops out of the silent list within minutes."""


def _rollup_latest(fields: str) -> str:
    return f'SELECT {fields} FROM "fleet" WHERE $timeFilter AND {FLEET_FILTER} GROUP BY {_ROLLUP_GROUPS}'


_LAST_MAX = 'last("max_risk") AS "max_risk"'


def _devices_now(field: str) -> str:
    """Sum over (site, hardware model) of the latest ``fleet_devices`` value."""
    return (
        f'SELECT sum("v") AS "devices" FROM (SELECT last("{field}") AS "v" FROM "fleet_devices" '
        f'WHERE $timeFilter AND {FLEET_FILTER} GROUP BY "site", "device_model")'
    )


def _at_risk_by(tag: str) -> str:
    inner = _rollup_latest('last("at_risk") AS "at_risk"')
    return f'SELECT sum("at_risk") AS "at risk" FROM ({inner}) GROUP BY "{tag}"'


def build(ds: dm.DataSourceRef) -> db.Dashboard:
    return (
        new_dashboard(UID, "fleetpulse · Fleet health", __doc__ or "")
        .with_variable(tag_variable("site", "Site", "device", "site", ds))
        .with_variable(tag_variable("device_model", "Hardware model", "device", "device_model", ds))
        .with_row(row("Now"))
        .with_panel(
            stat_panel(
                "Devices reporting",
                "Devices with a health report in the last 24 hours (fleet rollup).",
                ds,
                q(_devices_now("reporting")),
            ).time_from(ROLLUP_CURRENT)
        )
        .with_panel(
            stat_panel(
                "Devices at risk",
                "Devices with at least one component whose latest score is at or above the alert policy's "
                "raise threshold (fleet rollup).",
                ds,
                q(_devices_now("at_risk")),
            )
            .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color("orange"))
            .time_from(ROLLUP_CURRENT)
        )
        .with_panel(
            stat_panel(
                "Alerts raised",
                "Alerts raised by the alert policy in the time range (after hysteresis and cooldown).",
                ds,
                q(f'SELECT sum("raised") AS "raised" FROM "alert" WHERE $timeFilter AND {FLEET_FILTER}'),
            )
        )
        .with_panel(
            stat_panel(
                "Highest component risk",
                "The single highest latest score in the fleet selection (fleet rollup).",
                ds,
                q(f'SELECT max("max_risk") AS "risk" FROM ({_rollup_latest(_LAST_MAX)})'),
                unit="percentunit",
            )
            .thresholds(risk_thresholds())
            .time_from(ROLLUP_CURRENT)
        )
        .with_row(row("Where"))
        .with_panel(
            bars_panel(
                "At risk by component",
                "Components at or above the alert policy's raise threshold (from the fleet rollup).",
                ds,
                q(_at_risk_by("component"), alias="$tag_component"),
            ).time_from(ROLLUP_CURRENT)
        )
        .with_panel(
            bars_panel("At risk by site", "", ds, q(_at_risk_by("site"), alias="$tag_site")).time_from(ROLLUP_CURRENT)
        )
        .with_panel(
            bars_panel(
                "At risk by hardware model", "", ds, q(_at_risk_by("device_model"), alias="$tag_device_model")
            ).time_from(ROLLUP_CURRENT)
        )
        .with_row(row("Trend"))
        .with_panel(
            ts_panel(
                "Components at risk over time",
                "Components at or above the alert policy's raise threshold, from the fleet rollup "
                "(last rollup in each interval).",
                ds,
                q(
                    'SELECT sum("at_risk") AS "at risk" FROM (SELECT last("at_risk") AS "at_risk" FROM "fleet" '
                    f"WHERE $timeFilter AND {FLEET_FILTER} GROUP BY time($__interval), {_ROLLUP_GROUPS}) "
                    'WHERE $timeFilter GROUP BY time($__interval), "component" fill(none)',
                    alias="$tag_component",
                ),
            ).interval("1h")
        )
        .with_panel(
            ts_panel(
                "Mean risk by component",
                "Fleet-wide mean of each component's latest champion score (fleet rollup, weighted by the "
                "number of components); a rising line with no new alerts means many small drifts.",
                ds,
                q(
                    'SELECT sum("weighted") / sum("n") AS "mean" FROM (SELECT last("mean_risk") * last("components") '
                    'AS "weighted", last("components") AS "n" FROM "fleet" '
                    f"WHERE $timeFilter AND {FLEET_FILTER} GROUP BY time($__interval), {_ROLLUP_GROUPS}) "
                    'WHERE $timeFilter GROUP BY time($__interval), "component" fill(none)',
                    alias="$tag_component",
                ),
            )
            .unit("percentunit")
            .interval("1h")
        )
        .with_panel(
            ts_panel(
                "Alerts raised and cleared",
                "Alert state changes per interval.",
                ds,
                q(
                    'SELECT sum("raised") AS "raised", sum("cleared") AS "cleared" FROM "alert" '
                    f"WHERE $timeFilter AND {FLEET_FILTER} GROUP BY time($__interval) fill(0)"
                ),
            )
        )
        .with_panel(
            ts_panel(
                "Devices reporting and at risk over time",
                "From the fleet rollup (devices seen in the 24 h before each rollup): a drop in reporting "
                "devices means agents, the MDM bridge or the pipeline stalled.",
                ds,
                q(
                    'SELECT sum("reporting") AS "reporting", sum("at_risk") AS "at risk" FROM (SELECT '
                    'last("reporting") AS "reporting", last("at_risk") AS "at_risk" FROM "fleet_devices" '
                    f'WHERE $timeFilter AND {FLEET_FILTER} GROUP BY time($__interval), "site", "device_model") '
                    "WHERE $timeFilter GROUP BY time($__interval) fill(none)"
                ),
            ).interval("1h")
        )
        .with_row(row("Devices to act on"))
        .with_panel(
            table_panel(
                "Riskiest components",
                "Top 25 components by latest score; the device id links to the drill-down.",
                ds,
                q(
                    'SELECT top("risk", "device_id", "component", "site", "device_model", 25) AS "risk" '
                    f"FROM ({_LATEST_RISK})"
                ),
            )
            .span(24)
            .time_from(CURRENT)
            .unit("percentunit")
            .thresholds(risk_thresholds())
            .data_links(
                [
                    db.DashboardLink("Open device")
                    .type(dm.DashboardLinkType.LINK)
                    .url("/d/fleetpulse-device?var-device_id=${__data.fields.device_id}&${__url_time_range}")
                ]
            )
        )
        .with_panel(
            table_panel(
                "Silent devices",
                "Inventoried devices with no daily inventory for [alerts.consumer] silent_after (48 h: they have "
                "not reported for at least 24 h), longest silent first; the agent coverage alert counts them per "
                "site. Many at one site: its network or an agent rollout.",
                ds,
                q(
                    'SELECT last("hours_silent") AS "hours silent" FROM "silent_device" '
                    f'WHERE $timeFilter AND {FLEET_FILTER} GROUP BY "device_id", "site", "device_model"'
                ),
            )
            .span(24)
            .time_from(SILENT_CURRENT)
            .data_links(
                [
                    db.DashboardLink("Open device")
                    .type(dm.DashboardLinkType.LINK)
                    .url("/d/fleetpulse-device?var-device_id=${__data.fields.device_id}&${__url_time_range}")
                ]
            )
        )
    )

"""Device drill-down: why one device is at risk.

Risk per component over time with the alert policy's raise/clear events as
annotations, next to the raw signals the models read: SMART/NVMe counters,
battery wear, thermals and stability. Opened from the fleet overview's table
(``?var-device_id=...``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from fleetpulse.dashboards.common import new_dashboard, q, risk_thresholds, row, stat_panel, tag_variable, ts_panel
from fleetpulse.dashboards.influxql import InfluxAnnotation, InfluxAnnotationBuilder

UID = "device"
DEV = "\"device_id\" = '$device_id'"


def _by(measurement: str, fields: dict[str, str], agg: str, group: str = "") -> str:
    """``agg`` of several fields of one device per interval, optionally split by a tag (e.g. the disk)."""
    select = ", ".join(f'{agg}("{field}") AS "{label}"' for field, label in fields.items())
    by = f', "{group}"' if group else ""
    return f'SELECT {select} FROM "{measurement}" WHERE {DEV} AND $timeFilter GROUP BY time($__interval){by} fill(none)'


def build(ds: dm.DataSourceRef) -> db.Dashboard:
    alerts = InfluxAnnotation(
        name="Alerts",
        datasource=ds,
        query=f'SELECT "risk", "raised" FROM "alert" WHERE {DEV} AND $timeFilter GROUP BY "component", "state"',
        tags_column="component,state",
        text_column="risk",
    )
    ata = {
        "reallocated_sectors": "reallocated",
        "current_pending_sectors": "pending",
        "offline_uncorrectable": "offline uncorrectable",
        "reported_uncorrect": "reported uncorrect",
        "command_timeout": "command timeout",
    }
    nvme = {"percentage_used": "wear %", "available_spare_pct": "spare %", "media_errors": "media errors"}
    return (
        new_dashboard(UID, "fleetpulse · Device", __doc__ or "")
        .with_variable(tag_variable("site", "Site", "device", "site", ds))
        .with_variable(
            tag_variable("device_id", "Device", "device", "device_id", ds, where='"site" =~ /^$site$/', multi=False)
        )
        .annotation(InfluxAnnotationBuilder(alerts))
        .with_row(row("Risk"))
        .with_panel(
            stat_panel(
                "Latest risk per component",
                "Champion model's latest score of each component.",
                ds,
                q(
                    f'SELECT last("risk") FROM "risk" WHERE {DEV} AND "role" = \'champion\' AND $timeFilter '
                    'GROUP BY "component", "component_id"',
                    alias="$tag_component $tag_component_id",
                ),
                unit="percentunit",
            )
            .span(24)
            .thresholds(risk_thresholds())
        )
        .with_panel(
            ts_panel(
                "Risk over time",
                "Scores per component and model role; red markers are alert raise/clear events.",
                ds,
                q(
                    f'SELECT mean("risk") FROM "risk" WHERE {DEV} AND $timeFilter '
                    'GROUP BY time($__interval), "component", "component_id", "role" fill(none)',
                    alias="$tag_component $tag_component_id ($tag_role)",
                ),
            )
            .unit("percentunit")
            .min(0)
            .max(1)
        )
        .with_panel(
            ts_panel(
                "Estimated days to failure",
                "Where the model gives a time-to-failure estimate.",
                ds,
                q(
                    f'SELECT mean("days_to_failure") FROM "risk" WHERE {DEV} AND "role" = \'champion\' '
                    'AND $timeFilter GROUP BY time($__interval), "component", "component_id" fill(none)',
                    alias="$tag_component $tag_component_id",
                ),
            ).unit("d")
        )
        .with_row(row("Disks"))
        .with_panel(
            ts_panel(
                "SMART error counters (ATA)",
                "Raw SMART 5/197/198/187/188 values; any growth is a strong failure signal.",
                ds,
                q(_by("disk", ata, "max", "disk"), alias="$tag_disk $col"),
            )
        )
        .with_panel(
            ts_panel(
                "NVMe health",
                "Wear (percentage used), available spare and media errors from the NVMe health log.",
                ds,
                q(_by("disk", nvme, "max", "disk"), alias="$tag_disk $col"),
            )
        )
        .with_panel(
            ts_panel(
                "Disk temperature",
                "",
                ds,
                q(_by("disk", {"temperature_c": "temperature"}, "max", "disk"), alias="$tag_disk"),
            ).unit("celsius")
        )
        .with_row(row("Battery, thermals, stability"))
        .with_panel(
            ts_panel(
                "Battery health",
                "Full-charge over design capacity; below 0.8 a battery swap is usually worth it.",
                ds,
                q(_by("battery", {"health_ratio": "health"}, "mean")),
            )
            .unit("percentunit")
            .min(0)
            .max(1.1)
        )
        .with_panel(
            ts_panel("Battery cycles", "", ds, q(_by("battery", {"cycle_count": "cycles"}, "max"))),
        )
        .with_panel(
            ts_panel(
                "Temperatures",
                "",
                ds,
                q(_by("device", {"cpu_max_c": "cpu max", "sensors_max_c": "sensors max"}, "max")),
            ).unit("celsius")
        )
        .with_panel(
            ts_panel(
                "Fan and throttling",
                "A fan spinning fast with throttling events points to dust or a failing fan.",
                ds,
                q(_by("device", {"fan_rpm_max": "fan rpm"}, "max"), alias="fan rpm"),
                q(_by("device", {"throttle_events": "throttle events"}, "sum"), ref_id="B", alias="throttle events"),
            )
        )
        .with_panel(
            ts_panel(
                "Crashes and unexpected shutdowns",
                "Counts reported since the previous report, summed per interval.",
                ds,
                q(_by("device", {"crashes": "crashes", "unexpected_shutdowns": "unexpected shutdowns"}, "sum")),
            ).draw_style(cm.GraphDrawStyle.BARS)
        )
        .with_panel(
            ts_panel(
                "Memory errors",
                "Cumulative EDAC/WHEA counters; uncorrectable errors mean the module must go.",
                ds,
                q(_by("device", {"mem_correctable": "correctable", "mem_uncorrectable": "uncorrectable"}, "max")),
            )
        )
    )

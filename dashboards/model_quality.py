"""Model quality: are the scores still trustworthy?

Score distributions (champion and challenger side by side, from the ``fleet_scores``
rollup that ``fleetpulse dashboards rollup`` writes), which model versions the workers serve
(``serving_model``: a promoted champion shows up without a restart), input drift as
population stability index per feature (written by the models component, see
``fleetpulse.dashboards.schema.DRIFT``), and what technicians found when they
worked the tickets (``schema.TICKET``): the honest precision signal.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import histogram, piechart
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.piechart import PieChartType

from fleetpulse.dashboards.common import CHAMPION, CURRENT, new_dashboard, q, row, table_panel, tag_variable, ts_panel

UID = "model-quality"
MODEL = '"model_name" =~ /^$model_name$/'

# Latest ticket count per (component, state, outcome, site) in range; panels sum these snapshots.
_LATEST_TICKETS = (
    'SELECT last("count") AS "n" FROM "ticket" WHERE $timeFilter AND "component" =~ /^$component$/ '
    'GROUP BY "component", "state", "outcome", "site"'
)


def _psi_thresholds() -> db.ThresholdsConfig:
    """Usual PSI reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 retrain."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dm.Threshold(value=None, color="green"),
                dm.Threshold(value=0.1, color="orange"),
                dm.Threshold(value=0.25, color="red"),
            ]
        )
    )


def build(ds: dm.DataSourceRef) -> db.Dashboard:
    return (
        new_dashboard(UID, "fleetpulse · Model quality", __doc__ or "", refresh="5m")
        .with_variable(tag_variable("model_name", "Model", "risk", "model_name", ds))
        .with_variable(tag_variable("component", "Component", "risk", "component", ds))
        .with_row(row("Score distribution"))
        .with_panel(
            histogram.Panel()
            .title("Latest champion scores")
            .description("Distribution of each component's latest score in the range.")
            .datasource(ds)
            .height(8)
            .span(12)
            .time_from(CURRENT)
            .combine(True)
            .line_width(1)
            .fill_opacity(80)
            .gradient_mode(cm.GraphGradientMode.NONE)
            .with_target(
                q(
                    'SELECT "risk" FROM (SELECT last("risk") AS "risk" FROM "risk" WHERE $timeFilter '
                    f'AND {CHAMPION} AND {MODEL} AND "component" =~ /^$component$/ '
                    'GROUP BY "device_id", "component", "component_id")'
                ).table()
            )
        )
        .with_panel(
            ts_panel(
                "Score distribution over time",
                "Mean and p50/p90/p99 of each component's latest score, per component, model version and role "
                "(fleet rollup): the shadow-scored challenger next to the champion; a jump at a deploy is the "
                "model, not the fleet.",
                ds,
                q(
                    'SELECT last("mean") AS "mean", last("p50") AS "p50", last("p90") AS "p90", last("p99") AS "p99" '
                    f'FROM "fleet_scores" WHERE $timeFilter AND {MODEL} AND "component" =~ /^$component$/ '
                    'GROUP BY time($__interval), "component", "model_version", "role" fill(none)',
                    alias="$tag_component $tag_model_version $tag_role $col",
                ),
            )
            .unit("percentunit")
            .interval("1h")
        )
        .with_panel(
            ts_panel(
                "Components scored",
                "Components with a score in the 24 h before each rollup, per model version and role; a drop "
                "means the scorer stopped.",
                ds,
                q(
                    'SELECT sum("n") AS "components" FROM (SELECT last("components") AS "n" FROM "fleet_scores" '
                    f'WHERE $timeFilter AND {MODEL} GROUP BY time($__interval), "component", "model_version", "role") '
                    'WHERE $timeFilter GROUP BY time($__interval), "model_version", "role" fill(none)',
                    alias="$tag_model_version $tag_role",
                ),
            ).interval("1h")
        )
        .with_panel(
            ts_panel(
                "Serving model versions",
                "Models each stream worker serves, per component, role and version (written with the pipeline "
                "stats): a champion promoted with `fleetpulse models promote` appears as a new champion version "
                "within the worker's registry poll, without a restart.",
                ds,
                q(
                    'SELECT max("serving") AS "serving" FROM "serving_model" WHERE $timeFilter '
                    f'AND {MODEL} AND "component" =~ /^$component$/ '
                    'GROUP BY time($__interval), "component", "role", "model_name", "model_version" fill(none)',
                    alias="$tag_component $tag_role $tag_model_name:$tag_model_version",
                ),
            )
            .span(24)
            .interval("1m")
        )
        .with_row(row("Drift"))
        .with_panel(
            ts_panel(
                "Feature drift (PSI)",
                "Population stability index per feature vs training data; above 0.25 plan a retrain.",
                ds,
                q(
                    f'SELECT max("psi") AS "psi" FROM "drift" WHERE $timeFilter AND {MODEL} '
                    'GROUP BY time($__interval), "feature" fill(none)',
                    alias="$tag_feature",
                ),
            ).thresholds(_psi_thresholds())
        )
        .with_panel(
            table_panel(
                "Latest drift by feature and hardware model",
                "Which feature drifted, and on which hardware model.",
                ds,
                q(
                    f'SELECT last("psi") AS "psi" FROM "drift" WHERE $timeFilter AND {MODEL} '
                    'GROUP BY "feature", "device_model"'
                ),
            ).thresholds(_psi_thresholds())
        )
        .with_row(row("Ticket outcomes"))
        .with_panel(
            piechart.Panel()
            .title("Ticket outcomes")
            .description("What technicians found: confirmed_fault / no_fault_found / false_alarm / pending.")
            .datasource(ds)
            .height(8)
            .span(8)
            .time_from(CURRENT)
            .pie_type(PieChartType.DONUT)
            .hide_from(cb.HideSeriesConfig().tooltip(False).legend(False).viz(False))
            .with_target(
                q(f'SELECT sum("n") AS "tickets" FROM ({_LATEST_TICKETS}) GROUP BY "outcome"', alias="$tag_outcome")
            )
        )
        .with_panel(
            table_panel(
                "Outcomes by component",
                "Precision per component = confirmed_fault / all closed tickets.",
                ds,
                q(f'SELECT sum("n") AS "tickets" FROM ({_LATEST_TICKETS}) GROUP BY "component", "outcome"'),
            )
            .span(8)
            .time_from(CURRENT)
        )
        .with_panel(
            table_panel(
                "Tickets by state and site",
                "Open work per site.",
                ds,
                q(f'SELECT sum("n") AS "tickets" FROM ({_LATEST_TICKETS}) GROUP BY "state", "site"'),
            )
            .span(8)
            .time_from(CURRENT)
        )
        .with_panel(
            ts_panel(
                "Ticket outcomes over time",
                "",
                ds,
                q(
                    'SELECT sum("n") AS "tickets" FROM (SELECT last("count") AS "n" FROM "ticket" WHERE $timeFilter '
                    'AND "component" =~ /^$component$/ GROUP BY time($__interval), "component", "state", "outcome", '
                    '"site") WHERE $timeFilter GROUP BY time($__interval), "outcome" fill(none)',
                    alias="$tag_outcome",
                ),
            ).span(24)
        )
    )

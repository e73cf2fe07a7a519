"""Pipeline health: is the stream worker keeping up, and is anything being lost?

Reads the ``pipeline`` measurement the workers write (see
``fleetpulse.dashboards.schema.PIPELINE``) and the ``device`` measurement for what
actually reached the TSDB. Lag that grows while events/s stays flat means the
workers need scaling (Kubernetes scales them on this same lag).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from fleetpulse.dashboards.common import new_dashboard, q, row, stat_panel, tag_variable, ts_panel

UID = "pipeline"
WORKER = '"worker" =~ /^$worker$/'


def _per_worker(agg: str, field: str, label: str) -> str:
    return (
        f'SELECT {agg}("{field}") AS "{label}" FROM "pipeline" WHERE {WORKER} AND $timeFilter '
        'GROUP BY time($__interval), "worker" fill(none)'
    )


def _rate(counter: str, label: str) -> str:
    """Per-minute increase of a cumulative counter; non-negative so a worker restart is not a negative spike."""
    return (
        f'SELECT non_negative_derivative(max("{counter}"), 1m) AS "{label}" FROM "pipeline" '
        f'WHERE {WORKER} AND $timeFilter GROUP BY time($__interval), "worker" fill(none)'
    )


def _fleet_sum(agg: str, field: str, label: str) -> str:
    """Sum over workers of each worker's latest value: the whole pipeline's current figure."""
    return (
        f'SELECT sum("v") AS "{label}" FROM (SELECT {agg}("{field}") AS "v" FROM "pipeline" '
        f'WHERE {WORKER} AND $timeFilter GROUP BY "worker")'
    )


def build(ds: dm.DataSourceRef) -> db.Dashboard:
    return (
        new_dashboard(UID, "fleetpulse · Pipeline health", __doc__ or "", refresh="30s")
        .time("now-6h", "now")
        .with_variable(tag_variable("worker", "Worker", "pipeline", "worker", ds))
        .with_row(row("Now"))
        .with_panel(
            stat_panel(
                "Events/s", "Sum of the workers' latest rates.", ds, q(_fleet_sum("last", "events_per_s", "events/s"))
            )
        )
        .with_panel(
            stat_panel(
                "Consumer lag",
                "Records waiting in Kafka, all workers.",
                ds,
                q(_fleet_sum("last", "consumer_lag", "lag")),
            ).thresholds(
                db.ThresholdsConfig()
                .mode(dm.ThresholdsMode.ABSOLUTE)
                .steps(
                    [
                        dm.Threshold(value=None, color="green"),
                        dm.Threshold(value=10_000, color="orange"),
                        dm.Threshold(value=100_000, color="red"),
                    ]
                )
            )
        )
        .with_panel(
            stat_panel(
                "Dead letters in range",
                "Records refused with a reason (see the dead-letter topic); not lost, but not scored.",
                ds,
                q(_fleet_sum("spread", "dead_letters_total", "dead letters")),
            )
        )
        .with_panel(
            stat_panel(
                "Scoring latency p99",
                "Worst worker's latest p99.",
                ds,
                q(
                    'SELECT max("v") AS "p99" FROM (SELECT last("scoring_latency_p99_ms") AS "v" FROM "pipeline" '
                    f'WHERE {WORKER} AND $timeFilter GROUP BY "worker")'
                ),
                unit="ms",
            )
        )
        .with_row(row("Throughput and lag"))
        .with_panel(
            ts_panel(
                "Events/s per worker", "", ds, q(_per_worker("mean", "events_per_s", "events/s"), alias="$tag_worker")
            )
        )
        .with_panel(
            ts_panel(
                "Consumer lag per worker",
                "Summed over each worker's partitions.",
                ds,
                q(_per_worker("max", "consumer_lag", "lag"), alias="$tag_worker"),
            )
        )
        .with_panel(
            ts_panel(
                "Dead letters and duplicates per minute",
                "Refused records (bad JSON, schema, replays, unknown devices) and dropped duplicate reports.",
                ds,
                q(_rate("dead_letters_total", "dead letters"), alias="$tag_worker dead letters"),
                q(_rate("duplicates_total", "duplicates"), ref_id="B", alias="$tag_worker duplicates"),
            )
        )
        .with_panel(
            ts_panel(
                "Reports stored per interval",
                "Device points that reached the TSDB: compare with events/s to spot a failing sink.",
                ds,
                q(
                    'SELECT count("collector_errors") AS "reports" FROM "device" WHERE $timeFilter '
                    "GROUP BY time($__interval) fill(0)"
                ),
            )
        )
        .with_row(row("Scoring"))
        .with_panel(
            ts_panel(
                "Scoring latency",
                "Per batch, p50 and p99 reported by each worker.",
                ds,
                q(_per_worker("mean", "scoring_latency_p50_ms", "p50"), alias="$tag_worker p50"),
                q(_per_worker("max", "scoring_latency_p99_ms", "p99"), ref_id="B", alias="$tag_worker p99"),
            ).unit("ms")
        )
        .with_panel(
            ts_panel(
                "Scoring batch size",
                "Small batches under load mean the worker is latency-bound, not throughput-bound.",
                ds,
                q(_per_worker("mean", "batch_size", "batch size"), alias="$tag_worker"),
            )
        )
        .with_panel(
            ts_panel(
                "Agent collector errors",
                "Collectors that failed on endpoints (e.g. smartctl missing): summed per interval.",
                ds,
                q(
                    'SELECT sum("collector_errors") AS "collector errors" FROM "device" WHERE $timeFilter '
                    'GROUP BY time($__interval), "platform" fill(0)',
                    alias="$tag_platform",
                ),
            )
        )
    )

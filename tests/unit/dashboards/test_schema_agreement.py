"""The operational series the dashboards read are the ones the stream worker and model jobs write."""

from __future__ import annotations

from datetime import datetime

from fleetpulse.compat import UTC
from fleetpulse.dashboards.schema import DRIFT, PIPELINE
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.points import drift_point, pipeline_point

AT = datetime(2026, 11, 1, tzinfo=UTC)


def test_worker_pipeline_point_has_the_dashboard_fields() -> None:
    metrics = PipelineMetrics()
    metrics.set_lag(42)
    metrics.record_batch(
        {"fleetpulse.health.v1": 10}, {"scored": 10}, scores=10, alerts=0, scoring_s=0.004, batch_s=0.01
    )
    point = pipeline_point("worker-0", AT, metrics.snapshot())
    assert point.measurement == PIPELINE.name
    assert set(point.tags) == set(PIPELINE.tags)
    assert set(point.fields) == set(PIPELINE.fields)
    assert point.fields["consumer_lag"] == 42


def test_drift_point_has_the_dashboard_schema() -> None:
    point = drift_point("hazard-gbm", "reallocated_sectors", "Latitude 7420", 0.12, AT)
    assert point.measurement == DRIFT.name
    assert set(point.tags) == set(DRIFT.tags)
    assert set(point.fields) == set(DRIFT.fields)

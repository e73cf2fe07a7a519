"""Measurements the dashboards read beyond ``fleetpulse.streams.points``.

``streams/points.py`` maps contract records (device, disk, battery, risk, alert).
The pipeline-health and model-quality dashboards also need operational series
that the stream worker and the model jobs write; their names are fixed here, as
agreed with the streams and models components, so both sides query and write the
same thing. Like points.py: numeric fields only (VictoriaMetrics drops strings),
low-cardinality tags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[str, ...]
    doc: str


PIPELINE = Measurement(
    name="pipeline",
    tags=("worker",),
    fields=(
        "events_per_s",
        "events_total",
        "dead_letters_total",
        "duplicates_total",
        "consumer_lag",
        "scoring_latency_p50_ms",
        "scoring_latency_p99_ms",
        "batch_size",
    ),
    doc="one point per worker every few seconds; *_total are cumulative counters since worker start, "
    "consumer_lag = summed lag over the worker's assigned partitions",
)

DRIFT = Measurement(
    name="drift",
    tags=("model_name", "feature", "device_model"),
    fields=("psi",),
    doc="population stability index of one feature (per hardware model, or 'all') vs the training data",
)

TICKET = Measurement(
    name="ticket",
    tags=("component", "state", "outcome", "site"),
    fields=("count",),
    doc="periodic snapshot: number of tickets in each (component, state, outcome, site); outcome is "
    "'pending' until a technician records confirmed_fault / no_fault_found / false_alarm",
)

FLEET = Measurement(
    name="fleet",
    tags=("component", "site", "device_model"),
    fields=("components", "at_risk", "mean_risk", "max_risk"),
    doc="written every few minutes by `fleetpulse dashboards rollup`: each component's latest champion "
    "score within the last 24 h, aggregated per (component, site, hardware model); at_risk counts "
    "scores at or above the alert policy's raise threshold. Fleet views read this instead of "
    "scanning every device's points on every refresh",
)

FLEET_DEVICES = Measurement(
    name="fleet_devices",
    tags=("site", "device_model"),
    fields=("reporting", "at_risk"),
    doc="written with ``fleet``: devices with a health report in the last 24 h, and devices with at least "
    "one component whose latest champion score is at or above the raise threshold, per (site, hardware model)",
)

FLEET_SCORES = Measurement(
    name="fleet_scores",
    tags=("component", "role", "model_name", "model_version"),
    fields=("components", "mean", "p50", "p90", "p99"),
    doc="written with ``fleet``: distribution of each component's latest score in the last 24 h, per "
    "model version and role (champion and the shadow-scored challenger)",
)

SILENT_DEVICE = Measurement(
    name="silent_device",
    tags=("device_id", "site", "device_model"),
    fields=("hours_silent",),
    doc="written with ``ticket`` by `fleetpulse dashboards rollup`: one point per inventoried device whose last "
    "daily inventory is older than [alerts.consumer] silent_after (the devices the coverage alert counts); "
    "hours since that inventory",
)

SERVING_MODEL = Measurement(
    name="serving_model",
    tags=("worker", "component", "role", "model_name", "model_version"),
    fields=("serving",),
    doc="written with ``pipeline``: one point per model a worker serves (value 1); a new champion loaded "
    "from the registry shows as a new model_version from that time on",
)

EXTRA_MEASUREMENTS = (PIPELINE, DRIFT, TICKET, FLEET, FLEET_DEVICES, FLEET_SCORES, SILENT_DEVICE, SERVING_MODEL)

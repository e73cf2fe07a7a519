"""Storage mapping: contract records -> InfluxDB line-protocol points.

Kept apart from the wire model (as Scrutiny does): the TSDB schema can change
without touching the contract. Dashboards query exactly these measurements,
tags and fields, and their tests load data produced by these functions.

Only numeric fields are written, because VictoriaMetrics (a supported target)
drops string fields. Tags are low-cardinality facts used for grouping, plus the
device id for drill-down. ``device_model`` is the hardware model; ``model_name``
and ``model_version`` name the ML model.

Measurements:
  device   tags device_id kind platform site device_model
           fields cpu_percent memory_percent disk_free_bytes crashes unexpected_shutdowns
                  boot_duration_s cpu_max_c sensors_max_c fan_rpm_max throttle_events
                  mem_correctable mem_uncorrectable collector_errors
  disk     tags device_id disk disk_kind site device_model
           fields power_on_hours temperature_c reallocated_sectors reported_uncorrect command_timeout
                  current_pending_sectors offline_uncorrectable udma_crc_errors critical_warning
                  available_spare_pct percentage_used media_errors num_err_log_entries unsafe_shutdowns
                  smart_failed
  battery  tags device_id kind site device_model
           fields health_ratio design_capacity full_charge_capacity cycle_count temperature_c
                  runtime_full_minutes
  risk     tags device_id component component_id model_name model_version role site device_model
           fields risk days_to_failure
  alert    tags device_id component state site device_model
           fields risk raised cleared
  pipeline tags worker
           fields events_per_s events_total dead_letters_total duplicates_total consumer_lag
                  scoring_latency_p50_ms scoring_latency_p99_ms batch_size
  drift    tags model_name feature device_model
           fields psi

Every point is timed by event time (the report's ``collected_at``), never by the
wall clock at processing, so a replay after a crash rewrites identical points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from fleetpulse.contract import Alert, AlertState, DeviceInventory, HealthReport, RiskScore

FieldValue = float | int | bool


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: datetime

    def to_line_protocol(self) -> str:
        """One line of InfluxDB line protocol, nanosecond precision."""
        tag_part = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(self.tags.items()) if v != "")
        field_part = ",".join(f"{_escape_key(k)}={_format_field(v)}" for k, v in sorted(self.fields.items()))
        nanos = int(self.time.timestamp()) * 1_000_000_000 + self.time.microsecond * 1_000
        return f"{_escape_key(self.measurement)}{tag_part} {field_part} {nanos}"


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _format_field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    return repr(float(value))


def _numeric(values: Mapping[str, FieldValue | None]) -> dict[str, FieldValue]:
    """Drop absent and non-finite values: line protocol has no null, and NaN is not storable."""
    out: dict[str, FieldValue] = {}
    for key, value in values.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[key] = value
    return out


def _inventory_tags(inventory: DeviceInventory | None) -> dict[str, str]:
    if inventory is None:
        return {"site": "unknown", "device_model": "unknown"}
    return {"site": inventory.site or "unknown", "device_model": inventory.model or "unknown"}


def report_points(report: HealthReport, inventory: DeviceInventory | None = None) -> list[Point]:
    """All points of one health report: one ``device`` point, one per disk, one for the battery."""
    inv = _inventory_tags(inventory)
    base = {"device_id": report.device_id, **inv}
    at = report.collected_at
    sysload, stab, therm, mem = report.system, report.stability, report.thermal, report.memory
    device_fields = _numeric(
        {
            "cpu_percent": sysload.cpu_percent if sysload else None,
            "memory_percent": sysload.memory_percent if sysload else None,
            "disk_free_bytes": sysload.disk_free_bytes if sysload else None,
            "crashes": stab.crashes if stab else None,
            "unexpected_shutdowns": stab.unexpected_shutdowns if stab else None,
            "boot_duration_s": stab.boot_duration_s if stab else None,
            "cpu_max_c": therm.cpu_max_c if therm else None,
            "sensors_max_c": therm.sensors_max_c if therm else None,
            "fan_rpm_max": max(therm.fan_rpm) if therm and therm.fan_rpm else None,
            "throttle_events": therm.throttle_events if therm else None,
            "mem_correctable": mem.correctable_errors if mem else None,
            "mem_uncorrectable": mem.uncorrectable_errors if mem else None,
            "collector_errors": len(report.collector_errors),
        }
    )
    points = [
        Point("device", {**base, "kind": report.kind.value, "platform": report.platform.value}, device_fields, at)
    ]
    for disk in report.disks:
        disk_fields = _numeric(
            {
                "power_on_hours": disk.power_on_hours,
                "temperature_c": disk.temperature_c,
                "reallocated_sectors": disk.reallocated_sectors,
                "reported_uncorrect": disk.reported_uncorrect,
                "command_timeout": disk.command_timeout,
                "current_pending_sectors": disk.current_pending_sectors,
                "offline_uncorrectable": disk.offline_uncorrectable,
                "udma_crc_errors": disk.udma_crc_errors,
                "critical_warning": disk.critical_warning,
                "available_spare_pct": disk.available_spare_pct,
                "percentage_used": disk.percentage_used,
                "media_errors": disk.media_errors,
                "num_err_log_entries": disk.num_err_log_entries,
                "unsafe_shutdowns": disk.unsafe_shutdowns,
                "smart_failed": None if disk.smart_passed is None else int(not disk.smart_passed),
            }
        )
        if disk_fields:
            tags = {**base, "disk": disk.serial_hash or disk.name, "disk_kind": disk.kind.value}
            points.append(Point("disk", tags, disk_fields, at))
    if report.battery is not None:
        bat = report.battery
        battery_fields = _numeric(
            {
                "health_ratio": bat.health_ratio,
                "design_capacity": bat.design_capacity,
                "full_charge_capacity": bat.full_charge_capacity,
                "cycle_count": bat.cycle_count,
                "temperature_c": bat.temperature_c,
                "runtime_full_minutes": bat.runtime_full_minutes,
            }
        )
        points.append(Point("battery", {**base, "kind": report.kind.value}, battery_fields, at))
    return points


def score_point(score: RiskScore, inventory: DeviceInventory | None = None) -> Point:
    tags = {
        "device_id": score.device_id,
        "component": score.component.value,
        "component_id": score.component_id,
        "model_name": score.model_name,
        "model_version": score.model_version,
        "role": score.role.value,
        **_inventory_tags(inventory),
    }
    fields = _numeric({"risk": score.risk, "days_to_failure": score.days_to_failure})
    return Point("risk", tags, fields, score.collected_at)


def alert_point(alert: Alert, inventory: DeviceInventory | None = None) -> Point:
    tags = {
        "device_id": alert.device_id,
        "component": alert.component.value,
        "state": alert.state.value,
        **_inventory_tags(inventory),
    }
    raised = alert.state is AlertState.RAISED
    return Point("alert", tags, {"risk": alert.risk, "raised": int(raised), "cleared": int(not raised)}, alert.at)


def pipeline_point(worker: str, at: datetime, stats: Mapping[str, float | int]) -> Point:
    """The stream worker's own health (events/s, lag, latency), for the operations dashboard."""
    return Point("pipeline", {"worker": worker}, _numeric(stats), at)


def drift_point(model_name: str, feature: str, device_model: str, psi: float, at: datetime) -> Point:
    tags = {"model_name": model_name, "feature": feature, "device_model": device_model or "unknown"}
    return Point("drift", tags, _numeric({"psi": psi}), at)

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

Text is hostile (a disk serial, an MDM model name): no text may end the line or add
a tag, field or series. Line protocol has no escape for a line break, and InfluxDB 1.x
and VictoriaMetrics read backslashes before separators differently, so the stored
text (:func:`stored_text`) is the input with each of these replaced by U+FFFD:
control characters (C0, DEL, C1, which include line breaks), U+2028/U+2029, lone
surrogates, a backslash before a backslash, ``,``, ``=``, space or the end of the text,
and (field keys only) ``"``. Everything else, quotes, ``#`` and other Unicode included,
is stored exactly; the integration tests read it back from both TSDBs. A point that
cannot be stored (no fields, a reserved or duplicate key, a non-finite or out-of-range
value, a time outside the TSDB's range) raises :class:`UnencodablePoint`, which the
sink counts as a drop with its reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Protocol

from fleetpulse.compat import UTC
from fleetpulse.contract import Alert, AlertState, HealthReport, RiskScore

FieldValue = float | int | bool

REPLACEMENT = "\ufffd"
"""Stands in for every character the line protocol cannot carry identically on every server."""

# Line protocol has no escape for a line break (an escaped newline is kept with its backslash by
# InfluxDB 1.x and drops the line on VictoriaMetrics), other control characters are stored raw and
# break the tools that read them back, and lone surrogates cannot be encoded as UTF-8.
_UNREPRESENTABLE = {
    code: REPLACEMENT for code in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
}
_STORED = str.maketrans(_UNREPRESENTABLE)
_KEY_ESCAPES = str.maketrans({**_UNREPRESENTABLE, ",": "\\,", "=": "\\=", " ": "\\ "})
_MEASUREMENT_ESCAPES = str.maketrans({**_UNREPRESENTABLE, ",": "\\,", " ": "\\ "})
# A backslash before an escaped character, another backslash or the end of the text is read
# differently by InfluxDB 1.x (kept, or "invalid tag format") and VictoriaMetrics (unescaped).
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[\\,= ]|\Z)")
_PLAIN = re.compile(r"[^\x00-\x20\x7f-\x9f\u2028\u2029\ud800-\udfff\\\\,=]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64 = 2**63
_NANOS_MAX = _INT64 - 2  # InfluxDB's valid time range: +-(2**63 - 2) ns


class UnencodablePoint(ValueError):
    """A point no line-protocol server can store; ``reason`` is the drop counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def stored_text(text: str) -> str:
    """The text a TSDB stores for a measurement, tag key/value or field key written by this module.

    Identical to ``text`` unless it holds control characters, line/paragraph separators, lone
    surrogates or a backslash before a backslash, comma, ``=``, space or the end: each of those
    becomes U+FFFD, so the same input always lands in the same series and never in another line.
    """
    if "\\" in text:
        text = _AMBIGUOUS_BACKSLASH.sub(REPLACEMENT, text)
    return text.translate(_STORED)


def _escape_key(text: str) -> str:
    if _PLAIN.fullmatch(text):  # most texts (device ids, kinds): nothing to replace or escape
        return text
    return _escape_special(text)


@lru_cache(maxsize=16_384)  # sites and models with spaces repeat across the fleet
def _escape_special(text: str) -> str:
    if "\\" in text:
        text = _AMBIGUOUS_BACKSLASH.sub(REPLACEMENT, text)
    return text.translate(_KEY_ESCAPES)


@lru_cache(maxsize=256)  # a handful of measurements
def _escape_measurement(text: str) -> str:
    if "\\" in text:
        text = _AMBIGUOUS_BACKSLASH.sub(REPLACEMENT, text)
    escaped = text.translate(_MEASUREMENT_ESCAPES)
    if not escaped or escaped.startswith("#"):  # '#' starts a comment line: the point would vanish
        raise UnencodablePoint("invalid", f"measurement {escaped!r} is empty or starts with '#'")
    return escaped


@dataclass(frozen=True, slots=True, init=False)
class Point:
    """One TSDB point; immutable once built.

    Built for every report, score and alert the stream handles: ``__init__`` stores the fields
    through their slot descriptors, at a third of the cost of the ``object.__setattr__`` call per
    field that a frozen dataclass's generated ``__init__`` makes. Assignment still raises.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: datetime

    def __init__(
        self, measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time: datetime
    ) -> None:
        _set_measurement(self, measurement)
        _set_tags(self, tags)
        _set_fields(self, fields)
        _set_time(self, time)

    def to_line_protocol(self) -> str:
        """One line of InfluxDB line protocol, nanosecond precision; raises :class:`UnencodablePoint`.

        Every text goes through :func:`stored_text` and is escaped, so no input can end the line,
        add a tag or field, or be read differently by InfluxDB 1.x/2.x and VictoriaMetrics.
        Empty tag values are left out (a TSDB stores an empty tag as no tag).
        """
        if not self.fields:
            raise UnencodablePoint("no_fields", f"{self.measurement!r} point without fields")
        tag_part = "".join([f",{_tag_key(k)}={_escape_key(v)}" for k, v in sorted(self.tags.items()) if v])
        field_part = ",".join([f"{_field_key(k)}={_format_field(k, v)}" for k, v in sorted(self.fields.items())])
        if REPLACEMENT in tag_part or REPLACEMENT in field_part:  # escaping alone is one-to-one
            self._check_keys_stay_distinct()
        return f"{_escape_measurement(self.measurement)}{tag_part} {field_part} {_nanos(self.time)}"

    def _check_keys_stay_distinct(self) -> None:
        tag_keys = [_tag_key(k) for k, v in self.tags.items() if v]  # escaping is one-to-one on stored text
        field_keys = [_field_key(k) for k in self.fields]
        if len(set(tag_keys)) < len(tag_keys) or len(set(field_keys)) < len(field_keys):
            raise UnencodablePoint("invalid", f"{self.measurement!r} point has keys that are equal once stored")


_set_measurement, _set_tags, _set_fields, _set_time = (
    Point.__dict__[name].__set__ for name in ("measurement", "tags", "fields", "time")
)


@lru_cache(maxsize=4096)
def _tag_key(key: str) -> str:
    escaped = _escape_key(key)
    if not escaped or escaped == "time":
        raise UnencodablePoint("invalid", f"tag key {key!r} is empty or reserved")
    return escaped


def stored_field_key(key: str) -> str:
    """:func:`stored_text` for a field key, whose double quotes also become U+FFFD.

    VictoriaMetrics reads a quote in a field key as the start of a string value and silently
    stores 0 for the field: a quote there cannot be written faithfully to every server.
    """
    return stored_text(key).replace('"', REPLACEMENT)


@lru_cache(maxsize=4096)
def _field_key(key: str) -> str:
    escaped = _escape_key(key.replace('"', REPLACEMENT))
    if not escaped or escaped == "time":
        raise UnencodablePoint("invalid", f"field key {key!r} is empty or reserved")
    return escaped


def _format_field(key: str, value: FieldValue) -> str:
    kind = type(value)
    if kind is float and math.isfinite(value):  # the common case first
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise UnencodablePoint("invalid", f"field {key!r} is outside the 64-bit integer range")
        return f"{value}i"
    if isinstance(value, float) and math.isfinite(value):
        return repr(float(value))
    raise UnencodablePoint("invalid", f"field {key!r} is {kind.__name__} {value!r}, not a finite number")


@lru_cache(maxsize=4096)  # every point of a report shares its time
def _nanos(at: datetime) -> int:
    if at.tzinfo is None:
        raise UnencodablePoint("invalid", "naive timestamp")
    nanos = (at - _EPOCH) // timedelta(microseconds=1) * 1_000
    if not -_NANOS_MAX <= nanos <= _NANOS_MAX:
        raise UnencodablePoint("invalid", f"timestamp {at.isoformat()} outside the TSDB's time range")
    return nanos


def _numeric(values: Mapping[str, FieldValue | None]) -> dict[str, FieldValue]:
    """Drop absent and non-finite values: line protocol has no null, and NaN is not storable."""
    isfinite = math.isfinite
    return {
        key: value
        for key, value in values.items()
        if value is not None and not (isinstance(value, float) and not isfinite(value))
    }


class AssetFacts(Protocol):
    """What points are tagged with from the inventory: a ``DeviceInventory``, or the state it was joined into."""

    @property
    def site(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...


def _inventory_tags(inventory: AssetFacts | None) -> dict[str, str]:
    if inventory is None:
        return {"site": "unknown", "device_model": "unknown"}
    return {"site": inventory.site or "unknown", "device_model": inventory.model or "unknown"}


def report_points(report: HealthReport, inventory: AssetFacts | None = None) -> list[Point]:
    """All points of one health report: one ``device`` point, one per disk, one for the battery."""
    inv = _inventory_tags(inventory)
    base = {"device_id": report.device_id, **inv}
    at = report.collected_at
    kind = report.kind._value_  # an enum's ``.value`` is a Python-level property: ~6x the cost, per point
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
    points = [Point("device", {**base, "kind": kind, "platform": report.platform._value_}, device_fields, at)]
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
            tags = {**base, "disk": disk.serial_hash or disk.name, "disk_kind": disk.kind._value_}
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
        points.append(Point("battery", {**base, "kind": kind}, battery_fields, at))
    return points


def score_point(score: RiskScore, inventory: AssetFacts | None = None) -> Point:
    tags = {
        "device_id": score.device_id,
        "component": score.component._value_,
        "component_id": score.component_id,
        "model_name": score.model_name,
        "model_version": score.model_version,
        "role": score.role._value_,
        **_inventory_tags(inventory),
    }
    fields = _numeric({"risk": score.risk, "days_to_failure": score.days_to_failure})
    return Point("risk", tags, fields, score.collected_at)


def alert_point(alert: Alert, inventory: AssetFacts | None = None) -> Point:
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


def serving_point(worker: str, served: tuple[str, str, str, str], at: datetime) -> Point:
    """One model a worker serves (component, role, name, version): the Model-quality dashboard shows the switch."""
    component, role, name, version = served
    tags = {"worker": worker, "component": component, "role": role, "model_name": name, "model_version": version}
    return Point("serving_model", tags, {"serving": 1}, at)


def drift_point(model_name: str, feature: str, device_model: str, psi: float, at: datetime) -> Point:
    tags = {"model_name": model_name, "feature": feature, "device_model": device_model or "unknown"}
    return Point("drift", tags, _numeric({"psi": psi}), at)

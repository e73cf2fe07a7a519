"""Schema version 1 of every record fleetpulse puts on Kafka.

Design rules:
- All timestamps are timezone-aware and normalised to UTC; naive ones are rejected.
- NaN/inf and physically absurd values are rejected here, so every consumer can
  trust a record that decoded.
- Unknown fields are rejected (``extra="forbid"``): a producer that needs a new
  field ships a new schema version instead of silently losing data.
- No personal data: devices are identified by a pseudonymous id; serial numbers
  travel only as salted hashes (see ``fleetpulse.agents.identity``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from fleetpulse.compat import UTC, StrEnum

SCHEMA_VERSION: Literal[1] = 1

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    """Normalise to UTC and refuse dates no real device can report."""
    value = value.astimezone(UTC)
    if not _EARLIEST <= value < _LATEST:
        raise ValueError(f"timestamp {value.isoformat()} outside 2000..2100")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
MDM_DEVICE_ID_PREFIX = "mdm-"
"""The MDM bridge's pseudonyms start with it: no agent may enrol such an id and write that phone's history."""
ShortText = Annotated[str, StringConstraints(max_length=128)]
LongText = Annotated[str, StringConstraints(max_length=2048)]
COUNT_MAX = 2**48
"""The largest count the contract carries (a report's ``seq`` included): far beyond any real counter."""
Count = Annotated[int, Field(ge=0, le=COUNT_MAX)]
Celsius = Annotated[float, Field(ge=-40.0, le=150.0)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
Hex256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DeviceKind(StrEnum):
    LAPTOP = "laptop"
    DESKTOP = "desktop"
    PHONE = "phone"
    TABLET = "tablet"


class Platform(StrEnum):
    LINUX = "linux"
    WINDOWS = "windows"
    MACOS = "macos"
    ANDROID = "android"
    IOS = "ios"


class ReportSource(StrEnum):
    AGENT = "agent"
    MDM = "mdm"
    SIMULATOR = "simulator"


class Priority(StrEnum):
    """Spool priority: health events are never dropped before routine metrics."""

    EVENT = "event"
    ROUTINE = "routine"


class DiskKind(StrEnum):
    HDD = "hdd"
    SSD = "ssd"
    NVME = "nvme"
    UNKNOWN = "unknown"


class Component(StrEnum):
    DISK = "disk"
    BATTERY = "battery"
    THERMAL = "thermal"
    MEMORY = "memory"
    DEVICE = "device"


class DiskHealth(_Record):
    """One drive's SMART/NVMe health, reduced to the attributes that predict failure."""

    name: ShortText = Field(description="OS device name, e.g. /dev/sda or PhysicalDrive0")
    kind: DiskKind = DiskKind.UNKNOWN
    model: ShortText | None = None
    serial_hash: ShortText | None = Field(default=None, description="salted hash, never the raw serial")
    firmware: ShortText | None = None
    capacity_bytes: Annotated[int, Field(ge=0, le=2**60)] | None = None
    smart_passed: bool | None = Field(default=None, description="drive's own overall-health verdict")
    power_on_hours: Count | None = None
    temperature_c: Celsius | None = None
    # ATA attributes (raw values)
    reallocated_sectors: Count | None = Field(default=None, description="SMART 5")
    reported_uncorrect: Count | None = Field(default=None, description="SMART 187")
    command_timeout: Count | None = Field(default=None, description="SMART 188")
    current_pending_sectors: Count | None = Field(default=None, description="SMART 197")
    offline_uncorrectable: Count | None = Field(default=None, description="SMART 198")
    udma_crc_errors: Count | None = Field(default=None, description="SMART 199")
    # NVMe health log
    critical_warning: Annotated[int, Field(ge=0, le=255)] | None = None
    available_spare_pct: Percent | None = None
    available_spare_threshold_pct: Percent | None = None
    percentage_used: Annotated[float, Field(ge=0.0, le=255.0)] | None = None
    media_errors: Count | None = None
    num_err_log_entries: Count | None = None
    unsafe_shutdowns: Count | None = None
    free_bytes: Annotated[int, Field(ge=0, le=2**60)] | None = None


class BatteryHealth(_Record):
    """Capacities in mWh (or mAh when the platform reports only charge; both sides equal units)."""

    design_capacity: Annotated[float, Field(gt=0.0, le=1e7)]
    full_charge_capacity: Annotated[float, Field(ge=0.0, le=1e7)]
    unit: Literal["mWh", "mAh"] = "mWh"
    cycle_count: Count | None = None
    temperature_c: Celsius | None = None
    runtime_full_minutes: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = Field(
        default=None, description="estimated runtime on a full charge at typical load"
    )

    @model_validator(mode="after")
    def _plausible_ratio(self) -> BatteryHealth:
        if self.full_charge_capacity > 2.0 * self.design_capacity:
            raise ValueError("full_charge_capacity more than twice design_capacity")
        return self

    @property
    def health_ratio(self) -> float:
        return self.full_charge_capacity / self.design_capacity


class ThermalHealth(_Record):
    cpu_max_c: Celsius | None = None
    sensors_max_c: Celsius | None = None
    fan_rpm: Annotated[list[Annotated[float, Field(ge=0.0, le=30_000.0)]], Field(max_length=16)] = []
    throttle_events: Count | None = None


class MemoryHealth(_Record):
    """EDAC (Linux) or WHEA (Windows) memory error counters, cumulative."""

    correctable_errors: Count | None = None
    uncorrectable_errors: Count | None = None


class StabilityHealth(_Record):
    """Crash and boot signals; counts are since the previous report."""

    crashes: Count = 0
    unexpected_shutdowns: Count = 0
    boot_duration_s: Annotated[float, Field(ge=0.0, le=3600.0)] | None = None
    uptime_s: Annotated[float, Field(ge=0.0, le=10 * 365 * 86400.0)] | None = None


class SystemLoad(_Record):
    cpu_percent: Percent | None = None
    memory_percent: Percent | None = None
    disk_free_bytes: Annotated[int, Field(ge=0, le=2**60)] | None = None


class CollectorError(_Record):
    """A collector that failed is reported, never fatal to the agent."""

    collector: ShortText
    error: LongText


class HealthReport(_Record):
    """One health snapshot of one device: the agent's and the MDM bridge's unit of work."""

    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    seq: Count = Field(description="per-device monotonically increasing; (device_id, seq) is the dedup key")
    collected_at: UtcDatetime
    source: ReportSource = ReportSource.AGENT
    kind: DeviceKind
    platform: Platform
    agent_version: ShortText = "0"
    disks: Annotated[list[DiskHealth], Field(max_length=32)] = []
    battery: BatteryHealth | None = None
    thermal: ThermalHealth | None = None
    memory: MemoryHealth | None = None
    stability: StabilityHealth | None = None
    system: SystemLoad | None = None
    collector_errors: Annotated[list[CollectorError], Field(max_length=64)] = []

    @property
    def priority(self) -> Priority:
        """Reports that carry a health event outrank routine metrics in the agent's spool."""
        stab = self.stability
        if stab is not None and (stab.crashes or stab.unexpected_shutdowns):
            return Priority.EVENT
        for disk in self.disks:
            if disk.smart_passed is False or disk.critical_warning:
                return Priority.EVENT
            if any(
                (v or 0) > 0
                for v in (
                    disk.reallocated_sectors,
                    disk.current_pending_sectors,
                    disk.offline_uncorrectable,
                    disk.reported_uncorrect,
                    disk.media_errors,
                )
            ):
                return Priority.EVENT
        if self.memory is not None and self.memory.uncorrectable_errors:
            return Priority.EVENT
        return Priority.ROUTINE


class DeviceInventory(_Record):
    """Asset facts, keyed by device id on a compacted topic; joined into scores and tickets."""

    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    kind: DeviceKind
    vendor: ShortText | None = None
    model: ShortText | None = None
    purchase_date: date | None = None
    warranty_end: date | None = None
    site: ShortText | None = None
    department: ShortText | None = None
    updated_at: UtcDatetime


class DeviceEnrolment(_Record):
    """A device's report key, sent by its agent on the health topic before its first report.

    The first enrolment of a device pins its key (trust on first use, or the fingerprint IT
    pinned with ``fleetpulse devices re-enrol``); an enrolment with another key is dead-lettered.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    key: Hex256 = Field(description="the device's HMAC key, hex; readable only by the stream worker")
    created_at: UtcDatetime
    agent_version: ShortText = "0"


class DeviceControl(_Record):
    """An IT action on a device's enrolment, on the control topic that only IT's principal may write."""

    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    action: Literal["re_enrol"] = Field(description="forget the pinned key: the device's next enrolment is accepted")
    fingerprint: Hex256 | None = Field(
        default=None, description="accept only the key with this fingerprint (printed by `fleetpulse-agent identity`)"
    )
    issued_by: ShortText
    issued_at: UtcDatetime


class ServedRegistry(_Record):
    """A signed model registry index a worker served: restarted workers refuse any older index.

    A worker forgets on restart which index it served; whoever kept an old signed copy of the index
    could otherwise put it back and have a demoted model served again. Only the workers' principal
    may write the serving topic, so the registry folder's writers cannot lower what it records.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    registry: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="the registry's identity: a fingerprint of the key that signs its index"
    )
    generation: Annotated[int, Field(ge=1, le=2**48)]
    index_sha256: Hex256
    worker: ShortText
    served_at: UtcDatetime

    def log_key(self) -> str:
        """One record per generation: compaction can never leave an older generation as the latest word."""
        return f"{self.registry}:{self.generation:015d}"


class Factor(_Record):
    """One contributing signal behind a score, in words a fleet manager understands."""

    feature: ShortText
    value: float | None = None
    contribution: float = 0.0
    text: LongText


class ScorerRole(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


MAX_HORIZON_DAYS = 3650
"""The longest horizon a risk score states: a model trained for a longer one could never publish a score."""


class RiskScore(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    component: Component
    component_id: ShortText = Field(default="", description="e.g. the disk's serial hash; '' for single parts")
    risk: Annotated[float, Field(ge=0.0, le=1.0)] = Field(description="probability of failure within horizon")
    horizon_days: Annotated[int, Field(ge=1, le=MAX_HORIZON_DAYS)] = 30
    days_to_failure: Annotated[float, Field(ge=0.0, le=36500.0)] | None = None
    days_to_failure_low: Annotated[float, Field(ge=0.0, le=36500.0)] | None = None
    days_to_failure_high: Annotated[float, Field(ge=0.0, le=36500.0)] | None = None
    model_name: ShortText
    model_version: ShortText
    role: ScorerRole = ScorerRole.CHAMPION
    report_seq: Count
    collected_at: UtcDatetime
    scored_at: UtcDatetime
    factors: Annotated[list[Factor], Field(max_length=10)] = []


FeatureName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
FEATURE_LOG_MAX_FEATURES = 128
"""More than every feature a scorer computes (the disk model: 47): a bound, not a budget."""


class FeatureLogReason(StrEnum):
    DAILY = "daily"
    THRESHOLD = "threshold"


class FeatureLogRecord(_Record):
    """The features and score the worker used for one component: what fleet retraining learns from.

    Logged once per device, component and day (``daily``) and for scores at or above the
    component's raise threshold (``threshold``), of which the store keeps the day's first. Features
    only, never identities: the device is its pseudonymous id, the disk its salted serial hash, the
    hardware model a catalogue name.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    component: Component
    component_id: ShortText = ""
    hardware_model: ShortText | None = Field(default=None, description="the device's model from the inventory")
    day: date = Field(description="UTC day of the report the score was computed from")
    reason: FeatureLogReason
    features: Annotated[dict[FeatureName, float], Field(max_length=FEATURE_LOG_MAX_FEATURES)] = Field(
        description="finite values only: a feature the device does not report is absent, never 0"
    )
    risk: Annotated[float, Field(ge=0.0, le=1.0)]
    model_name: ShortText
    model_version: ShortText
    collected_at: UtcDatetime
    scored_at: UtcDatetime
    report_seq: Count

    @model_validator(mode="after")
    def _day_of_report(self) -> FeatureLogRecord:
        if self.day != self.collected_at.date():
            raise ValueError("day must be the UTC day of collected_at")
        return self

    def log_key(self) -> str:
        """Kafka key and store identity: one row per component, reason and day. Training reads one row per
        component and day, so a device scored above its threshold every minute (a PC reporting absurd values
        with a health event each minute) adds two rows a day, as any device does, not thousands."""
        return f"{self.device_id}|{self.component.value}|{self.component_id}|{self.reason.value}|{self.day.isoformat()}"


class AlertState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Alert(_Record):
    """A state change of one device component, produced by the alert policy."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: ShortText = Field(description="deterministic: replays produce the same id")
    device_id: DeviceId
    component: Component
    component_id: ShortText = ""
    state: AlertState
    risk: Annotated[float, Field(ge=0.0, le=1.0)]
    days_to_failure: float | None = None
    days_to_failure_low: float | None = None
    days_to_failure_high: float | None = None
    model_name: ShortText
    model_version: ShortText
    factors: Annotated[list[Factor], Field(max_length=10)] = []
    storm_group: ShortText | None = Field(default=None, description="set when part of a fleet-wide spike")
    at: UtcDatetime
    report_seq: Count


class TicketState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    ORDERED = "ordered"
    DONE = "done"
    DISMISSED = "dismissed"


class TicketOutcome(_Record):
    """Ground truth from the field, published to the labels topic for retraining."""

    schema_version: Literal[1] = SCHEMA_VERSION
    ticket_id: Annotated[int, Field(ge=1)]
    device_id: DeviceId
    component: Component
    component_id: ShortText = ""
    outcome: Literal["confirmed_fault", "no_fault_found", "false_alarm"]
    model_version: ShortText
    recorded_at: UtcDatetime
    recorded_by: ShortText


class Ticket(_Record):
    """A replacement/repair ticket as exchanged with ITSM connectors."""

    schema_version: Literal[1] = SCHEMA_VERSION
    ticket_id: Annotated[int, Field(ge=1)]
    device_id: DeviceId
    component: Component
    component_id: ShortText = ""
    state: TicketState
    urgency: Literal["low", "medium", "high", "critical"]
    risk: Annotated[float, Field(ge=0.0, le=1.0)]
    days_to_failure: float | None = None
    days_to_failure_low: float | None = None
    days_to_failure_high: float | None = None
    model_version: ShortText
    evidence: Annotated[list[Factor], Field(max_length=10)] = []
    recommended_action: LongText
    co2e_avoided_kg: Annotated[float, Field(ge=0.0)] = 0.0
    site: ShortText | None = None
    department: ShortText | None = None
    device_model: ShortText | None = None
    warranty_end: date | None = None
    opened_at: UtcDatetime
    updated_at: UtcDatetime


class DeadLetter(_Record):
    """A record the pipeline could not accept, kept with the reason instead of being dropped."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: LongText
    error_kind: Literal[
        "malformed_json",
        "schema_violation",
        "unsupported_version",
        "oversized",
        "duplicate",
        "stale_replay",
        "unknown_device",
        "clock_skew",
        "processing_error",
        "unauthenticated",
        "enrolment_conflict",
        "seq_out_of_bounds",
        "wrong_partition",
    ]
    source_topic: ShortText
    partition: Annotated[int, Field(ge=0)] | None = None
    offset: Annotated[int, Field(ge=0)] | None = None
    key: ShortText | None = None
    payload_excerpt: Annotated[str, StringConstraints(max_length=4096)] = Field(
        description="first bytes of the payload, escaped; enough to diagnose, bounded for safety"
    )
    payload_bytes: Annotated[int, Field(ge=0)]
    received_at: UtcDatetime

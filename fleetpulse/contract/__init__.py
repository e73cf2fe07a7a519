"""The one wire contract: every record on Kafka, the topic names and the codec.

Agent and server both import from here and nowhere else. A breaking change adds a
new version module (``v2``) and new topic names; ``v1`` is never edited incompatibly.
Which device sent a record is proven by Kafka headers (``contract.auth``), not by the
record's value, so the v1 values stay byte-for-byte what they were.
"""

from fleetpulse.contract.codec import (
    MAX_MESSAGE_BYTES,
    ContractError,
    decode,
    decode_report,
    encode,
    report_key,
)
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import (
    SCHEMA_VERSION,
    Alert,
    AlertState,
    BatteryHealth,
    CollectorError,
    Component,
    DeadLetter,
    DeviceControl,
    DeviceEnrolment,
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    Factor,
    HealthReport,
    MemoryHealth,
    Platform,
    Priority,
    ReportSource,
    RiskScore,
    ScorerRole,
    StabilityHealth,
    SystemLoad,
    ThermalHealth,
    Ticket,
    TicketOutcome,
    TicketState,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "Alert",
    "AlertState",
    "BatteryHealth",
    "CollectorError",
    "Component",
    "ContractError",
    "DeadLetter",
    "DeviceControl",
    "DeviceEnrolment",
    "DeviceInventory",
    "DeviceKind",
    "DiskHealth",
    "DiskKind",
    "Factor",
    "HealthReport",
    "MemoryHealth",
    "Platform",
    "Priority",
    "ReportSource",
    "RiskScore",
    "ScorerRole",
    "StabilityHealth",
    "SystemLoad",
    "ThermalHealth",
    "Ticket",
    "TicketOutcome",
    "TicketState",
    "Topics",
    "decode",
    "decode_report",
    "encode",
    "report_key",
]

"""Authenticated records for server-side producers of agent traffic: the simulator, demo, benchmarks, tests.

They publish on behalf of many simulated devices, so they hold one key per device and enrol each
before its first report, exactly as a real agent does (``fleetpulse.agents.delivery``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from fleetpulse import __version__
from fleetpulse.contract import DeviceEnrolment, HealthReport, encode, report_key
from fleetpulse.contract.auth import enrolment_headers, report_headers


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A Kafka record (key, value, headers) as an agent would send it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def derived_device_key(secret: bytes, device_id: str) -> bytes:
    """A per-device key derived from one secret: reproducible, so re-running a simulation matches its pins."""
    return hmac.digest(secret, f"device-key:{device_id}".encode(), "sha256")


def enrolment_record(device_id: str, key: bytes, at: datetime) -> SignedRecord:
    value = encode(DeviceEnrolment(device_id=device_id, key=key.hex(), created_at=at, agent_version=__version__))
    return SignedRecord(report_key(device_id), value, enrolment_headers(key, value))


def signed_report(report: HealthReport, key: bytes) -> SignedRecord:
    value = encode(report)
    return SignedRecord(report_key(report.device_id), value, report_headers(key, value))

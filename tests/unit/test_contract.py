"""The wire contract: round trips, and every kind of bad input gives a ContractError with a reason."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetpulse.compat import UTC
from fleetpulse.contract import (
    MAX_MESSAGE_BYTES,
    BatteryHealth,
    ContractError,
    DeviceControl,
    DeviceEnrolment,
    DiskHealth,
    HealthReport,
    Priority,
    StabilityHealth,
    Topics,
    decode_report,
    encode,
)
from fleetpulse.contract.auth import MAC_HEADER, header, key_fingerprint, mac_matches, report_headers

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def report(**overrides: object) -> HealthReport:
    fields: dict[str, object] = {
        "device_id": "pc-0001",
        "seq": 7,
        "collected_at": NOW,
        "kind": "laptop",
        "platform": "linux",
        "disks": [DiskHealth(name="/dev/nvme0n1", kind="nvme", percentage_used=12, media_errors=0)],
        "battery": BatteryHealth(design_capacity=57_000, full_charge_capacity=48_000, cycle_count=310),
    }
    fields.update(overrides)
    return HealthReport.model_validate(fields)


def test_round_trip_is_lossless() -> None:
    original = report()
    assert decode_report(encode(original)) == original


def test_timestamps_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    decoded = report(collected_at=datetime(2026, 11, 1, 13, 0, tzinfo=cet))
    assert decoded.collected_at == NOW
    assert decoded.collected_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "schema_violation"),
        (json.dumps({"schema_version": 99, "device_id": "x"}).encode(), "unsupported_version"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "oversized"),
    ],
)
def test_bad_payloads_are_classified(payload: bytes, kind: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_report(payload)
    assert err.value.kind == kind
    assert err.value.reason


@pytest.mark.parametrize(
    "mutation",
    [
        {"collected_at": "2026-11-01T12:00:00"},  # naive timestamp
        {"collected_at": "1970-01-01T00:00:00Z"},  # absurd date
        {"seq": -1},
        {"device_id": "../etc/passwd"},
        {"device_id": ""},
        {"kind": "toaster"},
        {"battery": {"design_capacity": 0, "full_charge_capacity": 10}},
        {"battery": {"design_capacity": 50_000, "full_charge_capacity": 500_000}},
        {"disks": [{"name": "sda", "temperature_c": 900}]},
        {"unexpected_field": 1},
    ],
)
def test_invalid_fields_are_schema_violations(mutation: dict[str, object]) -> None:
    body = json.loads(encode(report()))
    body.update(mutation)
    with pytest.raises(ContractError) as err:
        decode_report(json.dumps(body))
    assert err.value.kind == "schema_violation"


def test_nan_is_rejected() -> None:
    body = json.loads(encode(report()))
    body["disks"][0]["temperature_c"] = math.nan
    with pytest.raises(ContractError, match="schema_violation"):
        decode_report(json.dumps(body))  # json.dumps writes NaN, json.loads accepts it


def test_health_events_outrank_routine_metrics() -> None:
    assert report().priority is Priority.ROUTINE
    assert report(stability=StabilityHealth(crashes=1)).priority is Priority.EVENT
    assert report(disks=[DiskHealth(name="sda", reallocated_sectors=8)]).priority is Priority.EVENT


def test_topics_are_versioned_and_prefixed() -> None:
    topics = Topics(prefix="test.")
    assert topics.health == "test.fleetpulse.health.v1"
    assert len(set(topics.all())) == len(topics.all())


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_decoder(payload: bytes) -> None:
    try:
        decode_report(payload)
    except ContractError as err:
        assert err.kind in {"malformed_json", "schema_violation", "unsupported_version", "oversized"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(list(HealthReport.model_fields)), json_values, max_size=8))
def test_arbitrary_json_objects_are_accepted_or_classified(body: dict[str, object]) -> None:
    try:
        decoded = decode_report(json.dumps(body))
    except ContractError as err:
        assert err.reason
    else:
        assert decoded.device_id


def test_device_auth_primitives() -> None:
    """The MAC covers the value bytes exactly; headers may repeat (the last wins) or come as a mapping."""
    key, value = b"k" * 32, b'{"device_id":"pc-1"}'
    headers = report_headers(key, value)
    assert mac_matches(key, value, header(headers, MAC_HEADER))
    assert not mac_matches(key, value + b" ", header(headers, MAC_HEADER))
    assert not mac_matches(key, value, None)
    assert header([(MAC_HEADER, b"a"), (MAC_HEADER, b"b")], MAC_HEADER) == b"b"
    assert header({MAC_HEADER: b"c"}, MAC_HEADER) == b"c"
    assert header(None, MAC_HEADER) is None
    assert key.hex() not in key_fingerprint(key)
    with pytest.raises(ValidationError):
        DeviceEnrolment(device_id="pc-1", key="ab" * 16, created_at=datetime.now(UTC))  # 16 bytes: too short
    with pytest.raises(ValidationError):
        DeviceControl(
            device_id="pc-1", action="re_enrol", fingerprint="XYZ", issued_by="it", issued_at=datetime.now(UTC)
        )

"""The table value's encoding: exact round trips, features unchanged, JSON (version 1) still loads, and
hostile bytes (truncated, oversized counts, wrong version, NaN and infinity, byte flips) raise a clear
``ValueError`` that the processor dead-letters, never another exception and never a silent reset."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpulse.alerts.policy import PolicyState
from fleetpulse.contract import (
    BatteryHealth,
    DiskHealth,
    HealthReport,
    MemoryHealth,
    StabilityHealth,
    ThermalHealth,
)
from fleetpulse.models import features, state_codec
from fleetpulse.models.state import BATTERY_MERGE, DEVICE_MERGE, DISK_COUNTERS, DeviceState, apply_report_in_place
from fleetpulse.models.state_codec import StateDecodeError
from fleetpulse.streams.processing import DeviceRecord
from tests.unit.test_models_state import T0, full_disk, report
from tests.unit.test_stream_processing import NOW, Table, processor, report_raw
from tests.unit.test_stream_processing import report as stream_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

counts = st.none() | st.integers(min_value=0, max_value=2**48)
celsius = st.none() | st.floats(min_value=-40.0, max_value=150.0)


@st.composite
def health_reports(draw: st.DrawFn) -> list[HealthReport]:
    """A device's reports over up to a year, in any order (late ones included), every section optional."""
    out = []
    for seq in range(draw(st.integers(min_value=1, max_value=30))):
        at = T0 + timedelta(days=draw(st.integers(0, 365)), minutes=draw(st.integers(0, 1439)))
        disks = [
            DiskHealth(
                name=f"sd{i}",
                serial_hash=f"h{i}",
                reallocated_sectors=draw(counts),
                media_errors=draw(counts),
                temperature_c=draw(celsius),
                smart_passed=draw(st.none() | st.booleans()),
            )
            for i in range(draw(st.integers(0, 3)))
        ]
        battery = draw(
            st.none()
            | st.builds(
                BatteryHealth,
                design_capacity=st.sampled_from([50_000.0, 48_000.0]),
                full_charge_capacity=st.floats(min_value=0.0, max_value=96_000.0),
                cycle_count=counts,
                runtime_full_minutes=st.none() | st.floats(min_value=0.0, max_value=10_000.0),
            )
        )
        stability = draw(
            st.none()
            | st.builds(
                StabilityHealth,
                crashes=st.integers(0, 2**48),
                boot_duration_s=st.none() | st.floats(min_value=0.0, max_value=3600.0),
            )
        )
        thermal = draw(
            st.none()
            | st.builds(
                ThermalHealth,
                cpu_max_c=celsius,
                throttle_events=counts,
                fan_rpm=st.lists(st.floats(min_value=0.0, max_value=30_000.0), max_size=3),
            )
        )
        memory = draw(st.none() | st.builds(MemoryHealth, correctable_errors=counts, uncorrectable_errors=counts))
        out.append(report(seq, at, disks=disks, battery=battery, stability=stability, thermal=thermal, memory=memory))
    return out


def fold(reports: list[HealthReport]) -> DeviceState:
    state = DeviceState(device_id="pc-1")
    for r in reports:
        apply_report_in_place(state, r)
    return state


def all_features(state: DeviceState) -> list[bytes]:
    """Every feature value of ``state`` as its IEEE bytes: NaN equals NaN, 0.0 differs from -0.0."""
    groups = [features.device_features(state), features.thermal_features(state), features.memory_features(state)]
    groups += [features.disk_features(disk) for disk in state.disks.values()]
    if state.battery is not None:
        groups.append(features.battery_features(state.battery))
    return [name.encode() + struct.pack("<d", value) for group in groups for name, value in group.items()]


def record_with_policies(state: DeviceState) -> DeviceRecord:
    return DeviceRecord(
        state=state,
        policies={"disk:h0": PolicyState(raised=True, above=3, raise_seq=1, raised_alert_id="a-1", last_at=NOW)},
        scored_at=NOW,
        device_key="ab" * 32,
    )


@PROPERTY
@given(health_reports())
def test_any_valid_state_round_trips_exactly_and_scores_the_same(reports: list[HealthReport]) -> None:
    record = record_with_policies(fold(reports))
    value = record.to_bytes()
    assert value[:4] == b"FPS\x02"
    decoded = DeviceRecord.from_bytes(value)
    assert decoded == record
    assert decoded.to_bytes() == value
    assert all_features(decoded.state) == all_features(record.state)
    legacy = DeviceRecord.from_bytes(record.model_dump_json().encode())  # version 1, as stored before
    assert legacy == record
    assert all_features(legacy.state) == all_features(record.state)


def test_a_value_written_as_json_by_the_previous_version_loads_and_is_rewritten_packed() -> None:
    """The fixture is a table value the JSON-writing worker stored (missing values, battery, alert state)."""
    stored = (FIXTURES / "device_record_v1.json").read_bytes()
    record = DeviceRecord.from_bytes(stored)
    expected = DeviceRecord.model_validate(json.loads(stored))
    assert record == expected
    assert record.state.device.column("crashes")[:3] == [None, 1.0, 2.0]  # JSON null is a missing value
    table, proc = Table(), processor()
    table.data["pc-1"] = stored
    result = table.run(proc, [report_raw(stream_report("pc-1", record.state.last_seq + 1), 1)])
    assert result.counts["accepted"] == 1, result.dead_letters
    assert table.data["pc-1"][:4] == b"FPS\x02"
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.last_seq == record.state.last_seq + 1


def test_every_column_the_state_can_hold_has_a_stored_id() -> None:
    mean = [f"{name}__n" for merge in (BATTERY_MERGE, DEVICE_MERGE) for name, how in merge.items() if how == "mean"]
    assert {*DISK_COUNTERS, *BATTERY_MERGE, *DEVICE_MERGE, *mean} == set(state_codec.COLUMN_NAMES)


def sample_value() -> bytes:
    state = DeviceState(device_id="pc-1")
    for day in range(40):
        r = report(
            day,
            T0 + timedelta(days=day),
            disks=[full_disk("a", day)],
            battery=BatteryHealth(design_capacity=50_000, full_charge_capacity=45_000 - day, cycle_count=day),
            stability=StabilityHealth(crashes=day % 3) if day % 5 else None,
        )
        apply_report_in_place(state, r)
    return DeviceRecord(state=state).to_bytes()


def offset_of_first_float(value: bytes) -> int:
    """Where the device history's first dense value starts (prefix, header, count, history head, days, ids)."""
    header = struct.unpack_from("<I", value, 4)[0]
    at = 8 + header + 1
    days, dense, sparse = struct.unpack_from("<HBB", value, at)
    return at + 4 + 4 * days + dense + sparse


def refused(value: bytes) -> str:
    with pytest.raises(ValueError, match=r"\S") as caught:  # StateDecodeError or pydantic's error, with a reason
        DeviceRecord.from_bytes(value)
    return str(caught.value)


def test_every_truncation_is_refused_with_a_reason() -> None:
    value = sample_value()
    for size in range(len(value)):
        assert refused(value[:size])


def test_oversized_counts_are_refused_not_read_past_the_end() -> None:
    value = sample_value()
    header = struct.unpack_from("<I", value, 4)[0]
    history = 8 + header + 1

    def patched(offset: int, fmt: str, number: int) -> bytes:
        out = bytearray(value)
        struct.pack_into(fmt, out, offset, number)
        return bytes(out)

    assert "truncated" in refused(patched(4, "<I", 2**32 - 1))  # header length
    assert "truncated" in refused(patched(8 + header, "<B", 255))  # history count
    assert "truncated" in refused(patched(history, "<H", 65_535))  # days
    assert refused(patched(history + 2, "<B", 255))  # dense columns: reads ids and values past their place
    assert "after the last history" in refused(value + b"\x00")


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        (b"FPS\x03", "version 3"),
        (b"FPS\x01", "version 1"),
        (b"FPS\x00", "version 0"),
        (b"XYZ\x02", "not a device state"),
        (b"\x00\x00\x00\x00", "not a device state"),
    ],
)
def test_a_wrong_version_tag_is_refused(prefix: bytes, reason: str) -> None:
    assert reason in refused(prefix + sample_value()[4:])


@pytest.mark.parametrize("injected", [math.nan, math.inf, -math.inf, 1e308])
def test_nan_and_infinity_injected_into_a_history_are_refused(injected: float) -> None:
    value = bytearray(sample_value())
    struct.pack_into("<d", value, offset_of_first_float(bytes(value)), injected)
    assert "NaN, an infinity" in refused(bytes(value))


def test_nan_in_a_json_state_is_refused_too() -> None:
    record = json.loads(sample_value_json())
    record["state"]["device"]["columns"]["reports"][0] = "__NAN__"
    assert "NaN, an infinity" in refused(json.dumps(record).replace('"__NAN__"', "NaN").encode())


def sample_value_json() -> str:
    return DeviceRecord.from_bytes(sample_value()).model_dump_json()


def test_disordered_days_unknown_and_repeated_columns_are_refused() -> None:
    value = sample_value()
    header = struct.unpack_from("<I", value, 4)[0]
    history = 8 + header + 1
    days, dense, sparse = struct.unpack_from("<HBB", value, history)
    first_day = history + 4
    ids = first_day + 4 * days

    def patch(offset: int, data: bytes) -> bytes:
        return value[:offset] + data + value[offset + len(data) :]

    swapped = value[first_day + 4 : first_day + 8] + value[first_day : first_day + 4]
    assert "out of order" in refused(patch(first_day, swapped))
    assert "outside the calendar" in refused(patch(first_day, struct.pack("<i", -5)))
    assert "unknown or repeated column ids [200" in refused(patch(ids, b"\xc8"))
    assert sparse >= 1
    assert "unknown or repeated column ids" in refused(patch(ids + dense, value[ids : ids + 1]))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_flipped_bytes_decode_exactly_or_raise_a_value_error(data: st.DataObject) -> None:
    value = bytearray(sample_value())
    for _ in range(data.draw(st.integers(1, 4))):
        value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
    try:
        record = DeviceRecord.from_bytes(bytes(value))
    except ValueError:
        return
    assert DeviceRecord.from_bytes(record.to_bytes()) == record  # whatever loads is a state that stores again


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda v: v[: len(v) // 2],
        lambda v: b"FPS\x09" + v[4:],
        lambda v: v[:-8] + struct.pack("<d", math.nan),
    ],
)
def test_the_processor_dead_letters_a_report_whose_stored_state_is_corrupt(corrupt: Callable[[bytes], bytes]) -> None:
    table, proc = Table(), processor()
    table.data["pc-1"] = corrupt(sample_value())
    kept = table.data["pc-1"]
    result = table.run(proc, [report_raw(stream_report("pc-1", 100), 1)])
    assert [d.error_kind for d in result.dead_letters] == ["processing_error"]
    assert "StateDecodeError" in result.dead_letters[0].reason
    assert table.data["pc-1"] == kept  # nothing overwritten: the stored bytes stay for inspection


def test_state_decode_error_is_a_value_error() -> None:
    assert issubclass(StateDecodeError, ValueError)  # the stream's lookup and processor handle ValueError

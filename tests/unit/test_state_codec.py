"""The table value's encoding: exact round trips, features unchanged, JSON (version 1) and version 2 still
load, and hostile bytes (truncated, oversized counts, wrong version, NaN and infinity, byte flips, trailing
bytes) raise a clear ``ValueError`` that the processor dead-letters, never another exception and never a
silent reset. Version-2 values come from a fixture the version-2 worker stored (``sample_value()``'s record)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpulse.alerts.policy import PolicyState
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    DiskHealth,
    HealthReport,
    MemoryHealth,
    StabilityHealth,
    ThermalHealth,
)
from fleetpulse.models import features, state_codec
from fleetpulse.models.state import (
    BATTERY_MERGE,
    DEVICE_MERGE,
    DISK_COUNTERS,
    MISSING,
    BatteryHistory,
    DeviceState,
    DiskHistory,
    apply_report_in_place,
)
from fleetpulse.models.state_codec import HISTORY_FIELDS, StateDecodeError
from fleetpulse.streams.processing import ADDED_FIELDS, DeviceRecord
from tests.unit.test_models_state import T0, full_disk, report
from tests.unit.test_stream_processing import NOW, Table, processor, report_raw
from tests.unit.test_stream_processing import report as stream_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VERSION_2 = (FIXTURES / "device_record_v2.bin").read_bytes()
"""``sample_value()``'s record, enrolled with pc-1's test key, as the version-2 worker stored it (dense and
sparse columns)."""
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
    assert value[:4] == b"FPS\x03"
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
    assert table.data["pc-1"][:4] == b"FPS\x03"
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.last_seq == record.state.last_seq + 1


def test_a_version_2_value_loads_exactly_and_is_rewritten_as_version_3() -> None:
    assert VERSION_2[:4] == b"FPS\x02"
    record = DeviceRecord.from_bytes(VERSION_2)
    assert record.state == DeviceRecord.from_bytes(sample_value()).state
    crashes = record.state.device.column("crashes")
    assert crashes[0] is None  # a sparse column
    assert crashes[5] is None
    assert crashes[1] is not None
    assert DeviceRecord.from_bytes(record.to_bytes()) == record
    table, proc = Table(), processor()
    table.data["pc-1"] = VERSION_2
    result = table.run(proc, [report_raw(stream_report("pc-1", record.state.last_seq + 1), 1)])
    assert result.counts["accepted"] == 1, result.dead_letters
    assert table.data["pc-1"][:4] == b"FPS\x03"


when = st.datetimes(  # a stored date is one a report may carry: 2000..2100 in UTC (the contract's window)
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive; timezones= makes them aware
    max_value=datetime(2099, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30)), timezone(timedelta(hours=14))]),
)
text = st.text(max_size=20)


@PROPERTY
@given(when, when, text, st.floats(min_value=1.0, max_value=1e300), st.integers(0, 2**70), st.none() | when, text)
def test_the_header_reads_back_as_the_record_whatever_its_values(
    seen: datetime, scored: datetime, name: str, capacity: float, big: int, joined: datetime | None, key: str
) -> None:
    """orjson writes the header (pydantic's path only for what orjson refuses, e.g. an integer past 64 bits)."""
    state = DeviceState(
        device_id=name or "pc-1",
        last_seq=big,
        last_collected_at=seen,
        site=name,
        disks={name: DiskHistory(name=name, model=key, capacity_bytes=big, first_seen=seen, last_seen=scored)},
        battery=BatteryHistory(design_capacity=capacity, first_seen=seen, last_seen=scored),
    )
    policies = {f"disk:{name}": PolicyState(raised=True, raised_alert_id=key, cleared_at=seen, last_at=scored)}
    record = DeviceRecord(state=state, policies=policies, inventory_at=joined, scored_at=scored, device_key=key)
    header = state_codec.header_json(record, state)
    assert DeviceRecord.model_validate_json(header) == record
    assert DeviceRecord.from_bytes(record.to_bytes()) == record


def test_the_header_is_the_json_pydantic_writes() -> None:
    record = DeviceRecord.from_bytes(sample_value())
    record.policies = {"disk:h0": PolicyState(raised=True, above=3, raised_alert_id="a-1", last_at=NOW)}
    record.scored_at = NOW
    expected = record.model_dump_json(exclude={"state": HISTORY_FIELDS}).encode()
    assert state_codec.header_json(record, record.state) == expected


def test_a_value_not_using_the_added_fields_is_what_the_release_before_them_wrote() -> None:
    """Workers of two releases share partitions during a rolling update: the older one reads what the newer one
    wrote of every device that does not use a field the older one lacks (it refused unknown fields)."""
    record = DeviceRecord.from_bytes(sample_value())
    header, _ = state_codec.unpack(record.to_bytes())
    assert set(json.loads(header)) == set(DeviceRecord.model_fields) - ADDED_FIELDS
    record.enrolled_at = NOW
    header, _ = state_codec.unpack(record.to_bytes())
    assert json.loads(header)["enrolled_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert DeviceRecord.from_bytes(record.to_bytes()) == record


def test_a_value_a_newer_version_wrote_is_read_without_the_fields_it_added_not_reset() -> None:
    """A reset (``state_reset``) would forget the device's enrolled key and history; a newer version's added fields
    are read past instead, on the record, its state, its histories and its alert states."""
    record = DeviceRecord.from_bytes(sample_value())
    record.policies = {"disk:h0": PolicyState(raised=True, above=3, raised_alert_id="a-1", last_at=NOW)}
    header, _ = state_codec.unpack(record.to_bytes())
    newer = json.loads(header)
    newer["added_later"] = {"any": ["thing"]}
    newer["state"]["added_later"] = 1
    newer["policies"]["disk:h0"]["added_later"] = True
    for disk in newer["state"]["disks"].values():
        disk["added_later"] = "x"
    value = state_codec.pack(json.dumps(newer).encode(), record.state)
    assert DeviceRecord.from_bytes(value) == record


def test_a_missing_day_is_stored_as_the_one_nan_it_is_and_other_nans_or_infinities_never_are() -> None:
    record = DeviceRecord.from_bytes(sample_value())
    assert record.state.device.column("crashes")[0] is None
    assert DeviceRecord.from_bytes(record.to_bytes()) == record
    for bad in (math.inf, -math.inf, -math.nan, struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0001))[0]):
        record.state.device.columns["crashes"][0] = bad
        with pytest.raises(ValueError, match="infinity, a NaN other than a missing value"):
            record.to_bytes()
    record.state.device.columns["crashes"][0] = MISSING
    record.state.device.columns["reports"].append(1.0)
    with pytest.raises(ValueError, match="not all as long as its days"):
        record.to_bytes()


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


def layout(value: bytes) -> tuple[int, list[tuple[int, int]], int, int, int]:
    """A version-3 value's history count offset, (days, columns) per history, and where days, ids and values start."""
    count_at = 8 + struct.unpack_from("<I", value, 4)[0]
    count = value[count_at]
    heads = [struct.unpack_from("<HB", value, count_at + 1 + 3 * i) for i in range(count)]
    days_at = count_at + 1 + 3 * count
    ids_at = days_at + 4 * sum(days for days, _ in heads)
    return count_at, heads, days_at, ids_at, ids_at + sum(columns for _, columns in heads)


def offset_of_first_float(value: bytes) -> int:
    return layout(value)[4]


def offset_of_first_float_v2(value: bytes) -> int:
    """Where a version-2 value's device history's first dense value starts (prefix, header, count, head, days, ids)."""
    header = struct.unpack_from("<I", value, 4)[0]
    at = 8 + header + 1
    days, dense, sparse = struct.unpack_from("<HBB", value, at)
    return at + 4 + 4 * days + dense + sparse


def refused(value: bytes) -> str:
    with pytest.raises(ValueError, match=r"\S") as caught:  # StateDecodeError or pydantic's error, with a reason
        DeviceRecord.from_bytes(value)
    return str(caught.value)


@pytest.mark.parametrize("value", [sample_value(), VERSION_2], ids=["v3", "v2"])
def test_every_truncation_is_refused_with_a_reason(value: bytes) -> None:
    for size in range(len(value)):
        assert refused(value[:size])


def patched(value: bytes, offset: int, fmt: str, number: int) -> bytes:
    out = bytearray(value)
    struct.pack_into(fmt, out, offset, number)
    return bytes(out)


def test_oversized_counts_are_refused_not_read_past_the_end() -> None:
    value = sample_value()
    count_at, heads, _, _, _ = layout(value)
    assert "truncated" in refused(patched(value, 4, "<I", 2**32 - 1))  # header length
    assert "truncated" in refused(patched(value, count_at, "<B", 255))  # history count
    assert "truncated" in refused(patched(value, count_at + 1, "<H", 65_535))  # days
    assert "truncated" in refused(patched(value, count_at + 3, "<B", 255))  # columns
    assert "bytes after the last history" in refused(patched(value, count_at + 3, "<B", heads[0][1] - 1))
    assert "bytes after the last history" in refused(value + b"\x00")


def test_oversized_counts_of_a_version_2_value_are_refused_not_read_past_the_end() -> None:
    value = VERSION_2
    header = struct.unpack_from("<I", value, 4)[0]
    history = 8 + header + 1

    assert "truncated" in refused(patched(value, 4, "<I", 2**32 - 1))  # header length
    assert "truncated" in refused(patched(value, 8 + header, "<B", 255))  # history count
    assert "truncated" in refused(patched(value, history, "<H", 65_535))  # days
    assert refused(patched(value, history + 2, "<B", 255))  # dense columns: reads ids and values past their place
    assert "after the last history" in refused(value + b"\x00")


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        (b"FPS\x04", "version 4"),
        (b"FPS\x01", "version 1"),
        (b"FPS\x00", "version 0"),
        (b"XYZ\x03", "not a device state"),
        (b"\x00\x00\x00\x00", "not a device state"),
    ],
)
def test_a_wrong_version_tag_is_refused(prefix: bytes, reason: str) -> None:
    assert reason in refused(prefix + sample_value()[4:])


NAN_WITH_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0001))[0]


@pytest.mark.parametrize("injected", [NAN_WITH_PAYLOAD, -math.nan, math.inf, -math.inf, 1e308, -1e308])
def test_nan_and_infinity_injected_into_a_history_are_refused(injected: float) -> None:
    """A version-3 history holds no NaN but ``MISSING``'s own bit pattern (a missing day)."""
    value = bytearray(sample_value())
    struct.pack_into("<d", value, offset_of_first_float(bytes(value)), injected)
    assert "NaN, an infinity" in refused(bytes(value))


def test_the_missing_values_nan_injected_into_a_history_is_a_missing_day() -> None:
    value = bytearray(sample_value())
    struct.pack_into("<d", value, offset_of_first_float(bytes(value)), math.nan)
    record = DeviceRecord.from_bytes(bytes(value))
    first = next(iter(record.state.device.columns))
    assert record.state.device.column(first)[0] is None
    assert DeviceRecord.from_bytes(record.to_bytes()) == record


@pytest.mark.parametrize("injected", [math.nan, math.inf, -math.inf, 1e308])
def test_nan_and_infinity_injected_into_a_version_2_history_are_refused(injected: float) -> None:
    value = bytearray(VERSION_2)
    struct.pack_into("<d", value, offset_of_first_float_v2(bytes(value)), injected)
    assert "NaN, an infinity" in refused(bytes(value))


def test_nan_in_a_json_state_is_refused_too() -> None:
    record = json.loads(sample_value_json())
    record["state"]["device"]["columns"]["reports"][0] = "__NAN__"
    assert "NaN, an infinity" in refused(json.dumps(record).replace('"__NAN__"', "NaN").encode())


def sample_value_json() -> str:
    return DeviceRecord.from_bytes(sample_value()).model_dump_json()


def patch(value: bytes, offset: int, data: bytes) -> bytes:
    return value[:offset] + data + value[offset + len(data) :]


def test_disordered_days_unknown_and_repeated_columns_are_refused() -> None:
    value = sample_value()
    _, heads, first_day, ids, _ = layout(value)
    swapped = value[first_day + 4 : first_day + 8] + value[first_day : first_day + 4]
    assert "out of order" in refused(patch(value, first_day, swapped))
    assert "outside the calendar" in refused(patch(value, first_day, struct.pack("<i", -5)))
    last_day = first_day + 4 * (heads[0][0] - 1)
    assert "outside the calendar" in refused(patch(value, last_day, struct.pack("<i", 4_000_000)))
    assert "unknown or repeated column ids [200" in refused(patch(value, ids, b"\xc8"))
    assert "unknown or repeated column ids" in refused(patch(value, ids + 1, value[ids : ids + 1]))


def test_disordered_days_unknown_and_repeated_columns_of_a_version_2_value_are_refused() -> None:
    value = VERSION_2
    header = struct.unpack_from("<I", value, 4)[0]
    history = 8 + header + 1
    days, dense, sparse = struct.unpack_from("<HBB", value, history)
    first_day = history + 4
    ids = first_day + 4 * days

    swapped = value[first_day + 4 : first_day + 8] + value[first_day : first_day + 4]
    assert "out of order" in refused(patch(value, first_day, swapped))
    assert "outside the calendar" in refused(patch(value, first_day, struct.pack("<i", -5)))
    assert "unknown or repeated column ids [200" in refused(patch(value, ids, b"\xc8"))
    assert sparse >= 1
    assert "unknown or repeated column ids" in refused(patch(value, ids + dense, value[ids : ids + 1]))


@pytest.mark.parametrize("stored", [sample_value(), VERSION_2], ids=["v3", "v2"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipped_bytes_decode_exactly_or_raise_a_value_error(stored: bytes, data: st.DataObject) -> None:
    value = bytearray(stored)
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
        lambda v: v[:-8] + struct.pack("<d", math.inf),
        lambda v: v + b"\x00",
        lambda v: VERSION_2[:-8] + struct.pack("<d", math.nan),
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

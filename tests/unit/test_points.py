"""Storage mapping to line protocol: what the sink writes and the dashboards query."""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fleetpulse.compat import UTC
from fleetpulse.contract import BatteryHealth, DeviceInventory, DiskHealth, HealthReport, StabilityHealth
from fleetpulse.streams.points import Point, UnencodablePoint, report_points, stored_field_key, stored_text

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_report_becomes_device_disk_and_battery_points() -> None:
    report = HealthReport(
        device_id="pc-1",
        seq=1,
        collected_at=AT,
        kind="laptop",
        platform="windows",
        disks=[DiskHealth(name="disk 0", serial_hash="ab12", kind="ssd", reallocated_sectors=3, smart_passed=True)],
        battery=BatteryHealth(design_capacity=50_000, full_charge_capacity=40_000, cycle_count=300),
        stability=StabilityHealth(crashes=2),
    )
    inventory = DeviceInventory(device_id="pc-1", kind="laptop", model="Latitude 7420", site="Town Hall", updated_at=AT)
    lines = [p.to_line_protocol() for p in report_points(report, inventory)]
    assert lines[0].startswith("device,device_id=pc-1,device_model=Latitude\\ 7420,kind=laptop,platform=windows,")
    assert "crashes=2i" in lines[0]
    assert lines[1] == (
        "disk,device_id=pc-1,device_model=Latitude\\ 7420,disk=ab12,disk_kind=ssd,site=Town\\ Hall "
        "reallocated_sectors=3i,smart_failed=0i 1793534400000000000"
    )
    assert "health_ratio=0.8" in lines[2]


# Everything an attacker can put in a text: control characters incl. line breaks, surrogates,
# quotes, backslashes and the protocol's own separators.
HOSTILE = st.text(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from("\n\r\t\x00\x0b\x85\u2028\\,= \"'#")), max_size=40
)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], str]:
    """The reading every server shares: unescaped ',', '=' and ' ' separate ('=' not in the measurement).

    A backslash escapes a following separator and is literal otherwise.
    """
    parts: list[list[str]] = [[]]
    separators: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        separator = ", " if not separators else ",= "
        if char == "\\" and i + 1 < len(line) and line[i + 1] in separator:
            parts[-1].append(line[i + 1])
            i += 2
            continue
        if char in separator:
            separators.append(char)
            parts.append([])
        else:
            parts[-1].append(char)
        i += 1
    texts = ["".join(p) for p in parts]
    measurement, rest = texts[0], iter(zip(separators, texts[1:], strict=True))
    tags: dict[str, str] = {}
    fields: dict[str, str] = {}
    target = tags
    for sep, text in rest:
        if sep == " " and target is tags:
            target = fields
            key = text
        elif sep == " ":
            return measurement, tags, fields, text
        else:
            key = text
        eq, value = next(rest)
        assert eq == "="
        assert key
        target[key] = value
    raise AssertionError(f"no timestamp in {line!r}")


@given(tags=st.dictionaries(HOSTILE, HOSTILE, max_size=5), field=HOSTILE, measurement=HOSTILE)
def test_any_text_stays_inside_its_own_tag_or_key(tags: dict[str, str], field: str, measurement: str) -> None:
    tags = {f"t{k}": v for k, v in tags.items()}
    assume(len({stored_text(k) for k in tags}) == len(tags) and "time" not in tags)
    point = Point(f"m{measurement}", tags, {f"f{field}": 1.5}, AT)
    line = point.to_line_protocol()
    assert "\n" not in line
    assert "\r" not in line
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in line)
    line.encode()  # valid UTF-8: no lone surrogate survives
    name, parsed_tags, parsed_fields, timestamp = parse_line(line)
    assert name == stored_text(f"m{measurement}")
    assert parsed_tags == {stored_text(k): stored_text(v) for k, v in tags.items() if v}
    assert parsed_fields == {stored_field_key(f"f{field}"): "1.5"}
    assert timestamp == "1793534400000000000"


@given(HOSTILE)
def test_stored_text_is_a_fixed_point(text: str) -> None:
    """What the TSDB stores reads back as itself: writing it again lands in the same series."""
    assert stored_text(stored_text(text)) == stored_text(text)
    assert len(stored_text(text)) == len(text)


def test_newline_in_a_disk_serial_cannot_start_a_new_series() -> None:
    report = HealthReport(
        device_id="pc-1",
        seq=1,
        collected_at=AT,
        kind="desktop",
        platform="linux",
        disks=[
            DiskHealth(name="sda", serial_hash="x\nrisk,device_id=pc-9 risk=1.0", kind="hdd", reallocated_sectors=1)
        ],
    )
    inventory = DeviceInventory(device_id="pc-1", kind="desktop", model="Opti\nplex", updated_at=AT)
    lines = [p.to_line_protocol() for p in report_points(report, inventory)]
    assert len("\n".join(lines).splitlines()) == len(lines) == 2
    assert "disk=x\ufffdrisk\\,device_id\\=pc-9\\ risk\\=1.0," in lines[1]
    assert "device_model=Opti\ufffdplex" in lines[1]


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("C:\\disk", "C:\\disk"),  # a backslash before an ordinary character is read the same everywhere
        ("\\\\.\\PhysicalDrive0", "\ufffd\\.\\PhysicalDrive0"),
        ("a\\", "a\ufffd"),  # a trailing backslash would escape the separator
        ("a\\,b", "a\ufffd,b"),
        ("tab\there", "tab\ufffdhere"),
    ],
)
def test_ambiguous_backslashes_and_controls_are_replaced_deterministically(text: str, stored: str) -> None:
    assert stored_text(text) == stored


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point("device", {"device_id": "pc-1"}, {}, AT), "no_fields"),
        (Point("device", {}, {"x": 2**63}, AT), "invalid"),
        (Point("device", {}, {"x": float("nan")}, AT), "invalid"),
        (Point("device", {}, {"time": 1}, AT), "invalid"),
        (Point("device", {"time": "x"}, {"x": 1}, AT), "invalid"),
        (Point("#device", {}, {"x": 1}, AT), "invalid"),
        (Point("device", {"a\n": "1", "a\r": "2"}, {"x": 1}, AT), "invalid"),  # both keys stored as 'a\ufffd'
        (Point("device", {}, {'x"': 1, "x\t": 2}, AT), "invalid"),  # would be read as a comment line
        (Point("device", {}, {"x": 1}, datetime(2026, 11, 1)), "invalid"),  # noqa: DTZ001
        (Point("device", {}, {"x": 1}, datetime(2300, 1, 1, tzinfo=UTC)), "invalid"),
    ],
)
def test_points_no_tsdb_can_store_raise_with_a_reason(point: Point, reason: str) -> None:
    with pytest.raises(UnencodablePoint) as raised:
        point.to_line_protocol()
    assert raised.value.reason == reason


def test_a_point_stays_immutable_and_compares_by_value() -> None:
    point = Point("device", {"device_id": "pc-1"}, {"crashes": 1}, AT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.measurement = "disk"  # type: ignore[misc]
    assert point == Point("device", {"device_id": "pc-1"}, {"crashes": 1}, AT)
    assert point != Point("device", {"device_id": "pc-2"}, {"crashes": 1}, AT)
    assert repr(point).startswith("Point(measurement='device', tags={'device_id': 'pc-1'}")

"""Platform parsers against recorded-format outputs (tests/fixtures/agent) and against garbage."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.battery import (
    parse_ioreg_battery,
    parse_power_supply_uevent,
    parse_powercfg_battery_report,
    parse_upower,
    parse_wmi_battery,
)
from fleetpulse.agents.parsers.boot import parse_systemd_analyze, parse_windows_boot_event
from fleetpulse.agents.parsers.memory import parse_edac_counts, parse_whea_events
from fleetpulse.agents.parsers.smartctl import parse_smartctl_json, parse_smartctl_text
from fleetpulse.agents.parsers.thermal import thermal_from_sensors

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "agent"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_sysfs_energy_battery() -> None:
    battery = parse_power_supply_uevent(fixture("sysfs_BAT0_uevent"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity, battery.unit) == (57000.0, 43890.0, "mWh")
    assert battery.cycle_count == 412
    assert battery.temperature_c == pytest.approx(31.2)
    assert battery.health_ratio == pytest.approx(0.77)


def test_sysfs_charge_battery_without_cycle_count() -> None:
    battery = parse_power_supply_uevent(fixture("sysfs_BAT1_charge_uevent"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity, battery.unit) == (5800.0, 5104.0, "mAh")
    assert battery.cycle_count is None  # 0 means "not reported" in sysfs


@pytest.mark.parametrize("name", ["sysfs_AC_uevent", "sysfs_hidpp_uevent"])
def test_sysfs_non_system_batteries_are_ignored(name: str) -> None:
    assert parse_power_supply_uevent(fixture(name)) is None


def test_upower() -> None:
    battery = parse_upower(fixture("upower_battery.txt"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity) == (57000.0, 43890.0)
    assert battery.cycle_count == 412
    assert battery.temperature_c == pytest.approx(31.2)


def test_powercfg_battery_report() -> None:
    first, second = parse_powercfg_battery_report(fixture("powercfg_batteryreport.xml"))
    assert (first.design_capacity, first.full_charge_capacity, first.cycle_count) == (57000.0, 41230.0, 388)
    assert first.runtime_full_minutes == pytest.approx(312.5)
    assert second.cycle_count is None


def test_powercfg_refuses_dtd() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><BatteryReport>&a;</BatteryReport>'
    with pytest.raises(ParseError):
        parse_powercfg_battery_report(bomb)


def test_wmi_battery_fallback() -> None:
    battery = parse_wmi_battery(fixture("wmi_battery.json"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity, battery.cycle_count) == (57000.0, 41230.0, 388)
    assert parse_wmi_battery('{"DesignedCapacity": null, "FullChargedCapacity": null, "CycleCount": null}') is None


def test_ioreg_intel_mac() -> None:
    battery = parse_ioreg_battery(fixture("ioreg_battery_intel.txt"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity, battery.unit) == (5086.0, 4121.0, "mAh")
    assert battery.cycle_count == 611
    assert battery.temperature_c == pytest.approx(30.17)


def test_ioreg_apple_silicon_uses_raw_capacity_not_percent() -> None:
    battery = parse_ioreg_battery(fixture("ioreg_battery_arm.txt"))
    assert battery is not None
    assert (battery.design_capacity, battery.full_charge_capacity) == (6075.0, 4702.0)


def test_edac_sums_controllers() -> None:
    memory = parse_edac_counts(
        {"mc0/ce_count": "3\n", "mc0/ue_count": "0\n", "mc1/ce_count": "2\n", "mc1/ue_count": "1"}
    )
    assert memory is not None
    assert (memory.correctable_errors, memory.uncorrectable_errors) == (5, 1)
    assert parse_edac_counts({}) is None
    with pytest.raises(ParseError):
        parse_edac_counts({"mc0/ce_count": "garbage"})


def test_whea_events() -> None:
    memory = parse_whea_events(fixture("wevtutil_whea.txt"))
    assert (memory.correctable_errors, memory.uncorrectable_errors) == (2, 1)
    assert parse_whea_events("").correctable_errors == 0


def test_systemd_analyze() -> None:
    assert parse_systemd_analyze(fixture("systemd_analyze.txt")) == pytest.approx(74.174)
    assert parse_systemd_analyze("Startup finished in 1.2s (kernel) + 800ms (userspace) = 2.000s\n") == pytest.approx(
        2.0
    )
    with pytest.raises(ParseError):
        parse_systemd_analyze("Bootup is not yet finished. Please try again later.")


def test_windows_boot_performance_event() -> None:
    assert parse_windows_boot_event(fixture("wevtutil_boot_event.xml")) == pytest.approx(48.213)
    with pytest.raises(ParseError):
        parse_windows_boot_event("")


def test_thermal_ignores_disconnected_sensors() -> None:
    temps = {
        "coretemp": [SimpleNamespace(current=61.0), SimpleNamespace(current=66.0)],
        "acpitz": [SimpleNamespace(current=-273.2)],
        "nvme": [SimpleNamespace(current=44.0)],
    }
    thermal = thermal_from_sensors(temps, {"thinkpad": [SimpleNamespace(current=2900)]}, throttle_events=4)
    assert thermal is not None
    assert (thermal.cpu_max_c, thermal.sensors_max_c, thermal.fan_rpm, thermal.throttle_events) == (
        66.0,
        66.0,
        [2900.0],
        4,
    )
    assert thermal_from_sensors({}, {}) is None


PARSERS: list[Callable[[str], object]] = [
    lambda s: parse_smartctl_text(s, name="x"),
    lambda s: parse_smartctl_json(s, name="x"),
    parse_power_supply_uevent,
    parse_upower,
    parse_powercfg_battery_report,
    parse_ioreg_battery,
    parse_wmi_battery,
    parse_whea_events,
    parse_systemd_analyze,
    parse_windows_boot_event,
]


@pytest.mark.parametrize("parser", range(len(PARSERS)))
@given(text=st.text(max_size=2000))
def test_parsers_never_crash_on_garbage(parser: int, text: str) -> None:
    with contextlib.suppress(ParseError):
        PARSERS[parser](text)


_SMART_LINES = st.sampled_from(
    [
        "SMART overall-health self-assessment test result: PASSED",
        "Device Model:     X",
        "Model Number:  Y",
        "ID# ATTRIBUTE_NAME          FLAGS    VALUE WORST THRESH FAIL RAW_VALUE",
        "ID# ATTRIBUTE_NAME          FLAG     VALUE WORST THRESH TYPE      UPDATED  WHEN_FAILED RAW_VALUE",
        "  5 Reallocated_Sector_Ct   PO--CK   001   001   005    NOW  1966",
        "194 Temperature_Celsius     -O----   176   176   000    -    99999",
        "  9 Power_On_Minutes        0x0032   100   100   000    Old_age   Always       -       -5",
        "Critical Warning:                   0xZZ",
        "Temperature:                        65535 Celsius",
        "Available Spare:                    255%",
        "User Capacity:    -- bytes [...]",
        "read: 0 0 0 0 0 1,2 99999999999999999999",
        "",
    ]
)


@given(lines=st.lists(st.one_of(_SMART_LINES, st.text(max_size=80)), max_size=40))
def test_smartctl_text_survives_shuffled_real_lines(lines: list[str]) -> None:
    with contextlib.suppress(ParseError):
        parse_smartctl_text("\n".join(lines), name="x")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
_KEYS = st.sampled_from(
    [
        "model_name",
        "smart_status",
        "ata_smart_attributes",
        "nvme_smart_health_information_log",
        "device",
        "temperature",
        "power_on_time",
        "user_capacity",
    ]
)


@given(doc=st.dictionaries(_KEYS, _JSON, max_size=8))
def test_smartctl_json_survives_wrongly_typed_fields(doc: dict[str, object]) -> None:
    import json

    with contextlib.suppress(ParseError):
        parse_smartctl_json(json.dumps(doc), name="x")


# --------------------------------------------------------------------------- hostile input

_BIG = "9" * 5_000


def test_absurd_numbers_in_smartctl_text_cost_only_their_field() -> None:
    text = "\n".join(
        [
            "Device Model:     WDC WD40EFRX",
            f"User Capacity:    {_BIG} bytes [4.00 TB]",
            "Rotation Rate:    5400 rpm",
            "SMART overall-health self-assessment test result: PASSED",
            "ID# ATTRIBUTE_NAME          FLAG     VALUE WORST THRESH TYPE      UPDATED  WHEN_FAILED RAW_VALUE",
            f"  5 Reallocated_Sector_Ct   0x0033   200   200   140    Pre-fail  Always       -       {_BIG}",
            "  9 Power_On_Hours          0x0032   042   042   000    Old_age   Always       -       42512",
            f"194 Temperature_Celsius     0x0022   119   103   000    Old_age   Always       -       {_BIG}",
        ]
    )
    problems: list[str] = []
    disk = parse_smartctl_text(text, name="sda", problems=problems)
    assert (disk.model, disk.smart_passed, disk.power_on_hours) == ("WDC WD40EFRX", True, 42512)
    assert disk.capacity_bytes is None
    assert disk.reallocated_sectors is None
    assert problems == [
        "User Capacity: a number of more than 20 digits",
        "attribute 5 Reallocated_Sector_Ct: a number of more than 20 digits",
        "attribute 194 Temperature_Celsius: a number of more than 20 digits",
    ]
    assert all(_BIG[:30] not in p for p in problems), "the number itself is never echoed"


def test_absurd_numbers_in_smartctl_json_cost_only_their_field() -> None:
    doc = (
        '{"model_name": "X", "smart_status": {"passed": false}, "temperature": {"current": 41},'
        f' "power_on_time": {{"hours": {_BIG}}}, "ata_smart_attributes": {{"table": ['
        f'{{"id": 5, "name": "Reallocated_Sector_Ct", "raw": {{"value": {_BIG}, "string": "{_BIG}"}}}},'
        '{"id": 197, "raw": {"value": 8}}]}}'
    )
    problems: list[str] = []
    disk = parse_smartctl_json(doc, name="sda", problems=problems)
    assert (disk.model, disk.smart_passed, disk.temperature_c, disk.current_pending_sectors) == ("X", False, 41, 8)
    assert disk.power_on_hours is None
    assert disk.reallocated_sectors is None
    assert sorted(problems) == [
        "ata_smart_attributes id 5: a number of more than 20 digits",
        "ata_smart_attributes.table[0].raw.value: a number of more than 20 digits",
        "power_on_time.hours: a number of more than 20 digits",
    ]


def test_absurd_numbers_in_battery_boot_and_memory_outputs() -> None:
    problems: list[str] = []
    uevent = f"POWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_ENERGY_FULL_DESIGN=57000000\nPOWER_SUPPLY_ENERGY_FULL=43890000\nPOWER_SUPPLY_CYCLE_COUNT={_BIG}\n"
    battery = parse_power_supply_uevent(uevent, problems)
    assert battery is not None
    assert (battery.design_capacity, battery.cycle_count) == (57000.0, None)
    assert problems == ["CYCLE_COUNT: a number of more than 20 digits"]
    with pytest.raises(ParseError, match="ENERGY_FULL_DESIGN: a number of more than 20 digits"):
        parse_power_supply_uevent(f"POWER_SUPPLY_ENERGY_FULL_DESIGN={_BIG}\nPOWER_SUPPLY_ENERGY_FULL=1\n")
    ioreg = f'  | "DesignCapacity" = 5000\n  | "AppleRawMaxCapacity" = 4000\n  | "CycleCount" = {_BIG}\n'
    assert parse_ioreg_battery(ioreg) is not None
    with pytest.raises(ParseError, match="BootTime"):
        parse_windows_boot_event(f"<Data Name='BootTime'>{_BIG}</Data>")
    with pytest.raises(ParseError, match="mc0/ce_count: a number of more than 20 digits"):
        parse_edac_counts({"mc0/ce_count": _BIG})
    assert parse_whea_events(f"Event ID: {_BIG}\nEvent ID: 19\n").correctable_errors == 1


def _hostile(size: int) -> str:
    """Long whitespace and digit runs, wide rows and binary junk inside a real smartctl frame."""
    pieces = [
        "Device Model: x" + " " * 40_000 + "y",
        " " * 40_000,
        "User Capacity: " + "9" * 5_000,
        "ID# ATTRIBUTE_NAME          FLAGS    VALUE WORST THRESH FAIL RAW_VALUE",
        "  5 Reallocated_Sector_Ct   PO--CK   001   001   005    NOW  " + "9" * 5_000,
        "  9 Power_On_Hours " + " 1" * 20_000,
        "read: " + "1 " * 10_000 + "1",
        '    | "CycleCount" = ' + " " * 40_000 + "x",
        "Event ID: " + "1" * 5_000,
        bytes(range(256)).decode("latin-1") * 8,
        "\n".join(["  5 Reallocated_Sector_Ct PO--CK 001 001 005 NOW 1", "x:", "Event ID: 19"] * 300),
    ]
    out = ["SMART overall-health self-assessment test result: PASSED"]
    while sum(len(p) + 1 for p in out) < size:
        out += pieces
    return "\n".join(out)[:size]


_TEXT_PARSERS: dict[str, Callable[[str], object]] = {
    "smartctl": lambda s: parse_smartctl_text(s, name="x"),
    "upower": parse_upower,
    "uevent": parse_power_supply_uevent,
    "ioreg": parse_ioreg_battery,
    "whea": parse_whea_events,
    "systemd": parse_systemd_analyze,
}


def _best_seconds(parser: str, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.suppress(ParseError):
            _TEXT_PARSERS[parser](text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("parser", sorted(_TEXT_PARSERS))
def test_hostile_megabyte_parses_in_linear_time(parser: str) -> None:
    """Doubling hostile input at most roughly doubles the time (a wide x4 margin over at least 25 ms absorbs a busy machine);
    benchmarks/parsers_hostile.py prints the absolute times (about 5 ms per MB; target < 0.5 s)."""
    one, two = _hostile(1_000_000), _hostile(2_000_000)
    assert _best_seconds(parser, one) < 0.5
    small, large = _best_seconds(parser, one), _best_seconds(parser, two)
    assert large < 4 * max(small, 0.025), (small, large)


@pytest.mark.parametrize("width", [40_000, 80_000])
def test_a_long_whitespace_run_behind_a_key_is_linear(width: int) -> None:
    line = "Device Model: x" + " " * width + "y\nSMART overall-health self-assessment test result: PASSED\n"
    assert _best_seconds("smartctl", line * 10) < 0.5


_HOSTILE_RUN = st.tuples(
    st.sampled_from(
        [
            "",
            "Device Model: ",
            "User Capacity: ",
            "  5 Raw_Read PO 1 1 1 - ",
            "read: ",
            "Event ID: ",
            '| "CycleCount" = ',
            "POWER_SUPPLY_CYCLE_COUNT=",
            "charge-cycles: ",
            "Startup finished in 1s = ",
        ]
    ),
    st.sampled_from([" ", "9", "\t", "1 ", "0x", ":", "\x00", "\u00a0", "٣"]),
    st.integers(0, 30_000),
    st.text(max_size=20),
).map(lambda t: t[0] + t[1] * t[2] + t[3])


@pytest.mark.parametrize("parser", range(len(PARSERS)))
@given(
    lines=st.lists(
        _HOSTILE_RUN
        | st.sampled_from(
            [
                "SMART overall-health self-assessment test result: PASSED",
                "ID# ATTRIBUTE_NAME FLAGS VALUE WORST THRESH FAIL RAW_VALUE",
                "POWER_SUPPLY_ENERGY_FULL_DESIGN=1000",
                "energy-full-design: 50 Wh",
            ]
        ),
        max_size=12,
    )
)
@settings(max_examples=60, deadline=None)
def test_hostile_runs_never_raise_anything_but_parse_error(parser: int, lines: list[str]) -> None:
    with contextlib.suppress(ParseError):
        PARSERS[parser]("\n".join(lines))

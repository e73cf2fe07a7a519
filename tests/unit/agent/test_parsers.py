"""Platform parsers against recorded-format outputs (tests/fixtures/agent) and against garbage."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
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


PARSERS = [
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

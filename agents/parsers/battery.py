"""Battery wear from each platform's own source, normalised to :class:`BatteryHealth`.

Linux: ``/sys/class/power_supply/BAT*/uevent`` (µWh or µAh) and ``upower -i``; Windows:
``powercfg /batteryreport /xml`` (mWh); macOS: ``ioreg -r -n AppleSmartBattery`` (mAh).
Design and full-charge capacity must come in the same unit; the ratio is what predicts wear.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fleetpulse.agents.parsers.common import (
    MAX_LINE,
    ParseError,
    build_lenient,
    checked_float,
    checked_int,
    first_number,
    guarded,
    named,
)
from fleetpulse.contract import BatteryHealth

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

# --------------------------------------------------------------------------- Linux sysfs


def parse_power_supply_uevent(text: str, problems: list[str] | None = None) -> BatteryHealth | None:
    """A power_supply ``uevent`` file; ``None`` for mains adapters and batteries without capacity data.

    An unusable optional value (a 5000-digit cycle count) costs only its field, named in ``problems``.
    """
    sink = problems if problems is not None else []
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().removeprefix("POWER_SUPPLY_")] = value.strip()
    if values.get("TYPE", "Battery") != "Battery":
        return None
    if values.get("SCOPE", "System") == "Device":
        return None  # a mouse or headset battery, not the laptop's
    fields: dict[str, Any] = {}
    for prefix, unit in (("ENERGY", "mWh"), ("CHARGE", "mAh")):
        design = _micro(values.get(f"{prefix}_FULL_DESIGN"), f"{prefix}_FULL_DESIGN")
        full = _micro(values.get(f"{prefix}_FULL"), f"{prefix}_FULL")
        if design and full is not None:
            fields.update(design_capacity=design, full_charge_capacity=full, unit=unit)
            break
    if not fields:
        return None
    cycles = values.get("CYCLE_COUNT")
    count = guarded(sink, "CYCLE_COUNT", checked_int, cycles if cycles and cycles.isdecimal() else None)
    fields["cycle_count"] = count or None
    temp = values.get("TEMP")
    if temp and temp.removeprefix("-").isdecimal():
        tenths = guarded(sink, "TEMP", checked_int, temp)
        fields["temperature_c"] = tenths / 10.0 if tenths is not None else None  # sysfs: tenths of a degree
    return build_lenient(BatteryHealth, fields, required=("design_capacity", "full_charge_capacity"), problems=sink)


def _micro(text: str | None, field: str) -> float | None:
    """sysfs energy/charge values are in µWh / µAh."""
    if text is None or not text.isdecimal():
        return None
    return named(field, checked_int, text) / 1000.0


# --------------------------------------------------------------------------- upower


def parse_upower(text: str, problems: list[str] | None = None) -> BatteryHealth | None:
    """``upower -i /org/freedesktop/UPower/devices/battery_BAT0``; ``None`` when it is not a battery."""
    sink = problems if problems is not None else []
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key and key not in values:
            values[key.strip()] = value.strip()
    if "energy-full-design" not in values:
        if "native-path" in values or "model" in values:
            return None
        raise ParseError("not upower -i output")
    if values.get("power supply", "yes") == "no":
        return None
    design = named("energy-full-design", first_number, values["energy-full-design"])
    full = named("energy-full", first_number, values.get("energy-full", ""))
    if not design or full is None:
        return None
    fields: dict[str, Any] = {
        "design_capacity": design * 1000.0,  # upower prints Wh
        "full_charge_capacity": full * 1000.0,
        "unit": "mWh",
    }
    cycles = guarded(sink, "charge-cycles", first_number, values.get("charge-cycles"))
    fields["cycle_count"] = int(cycles) if cycles is not None and cycles > 0 else None
    fields["temperature_c"] = guarded(sink, "temperature", first_number, values.get("temperature"))
    return build_lenient(BatteryHealth, fields, required=("design_capacity", "full_charge_capacity"), problems=sink)


# --------------------------------------------------------------------------- Windows powercfg

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_powercfg_battery_report(xml_text: str | bytes, problems: list[str] | None = None) -> list[BatteryHealth]:
    """``powercfg /batteryreport /xml``: one record per installed battery (mWh)."""
    sink = problems if problems is not None else []
    import xml.etree.ElementTree as ET  # Windows only: the XML parser (~0.4 MB) stays unloaded elsewhere

    raw = xml_text.encode() if isinstance(xml_text, str) else xml_text
    if b"<!DOCTYPE" in raw[:4096] or b"<!ENTITY" in raw:
        raise ParseError("refusing XML with a DTD")  # powercfg never emits one; entities could explode
    try:
        root = ET.fromstring(raw)  # noqa: S314 - local, DTD-free output of powercfg
    except ET.ParseError as exc:
        raise ParseError(f"malformed battery report XML: {exc}") from None
    if _local(root.tag) != "BatteryReport":
        raise ParseError(f"not a battery report (root element {_local(root.tag)})")
    runtime = _full_charge_runtime(root)
    batteries = []
    for node in root.iter():
        if _local(node.tag) != "Battery":
            continue
        child = {_local(c.tag): (c.text or "").strip() for c in node}
        design = named("DesignCapacity", _num, child.get("DesignCapacity", ""))
        full = named("FullChargeCapacity", _num, child.get("FullChargeCapacity", ""))
        if not design or full is None:
            continue
        cycles = guarded(sink, "CycleCount", _num, child.get("CycleCount"))
        batteries.append(
            build_lenient(
                BatteryHealth,
                {
                    "design_capacity": design,
                    "full_charge_capacity": full,
                    "unit": "mWh",
                    "cycle_count": int(cycles) if cycles else None,
                    "runtime_full_minutes": runtime,
                },
                required=("design_capacity", "full_charge_capacity"),
                problems=sink,
            )
        )
    return batteries


def _full_charge_runtime(root: ET.Element) -> float | None:
    for node in root.iter():
        if _local(node.tag) != "RuntimeEstimates":
            continue
        for estimate in node:
            if _local(estimate.tag) == "FullChargeCapacity":
                for value in estimate:
                    if _local(value.tag) == "ActiveRuntime":
                        return _iso_minutes((value.text or "").strip())
    return None


def _iso_minutes(text: str) -> float | None:
    match = _DURATION.match(text)
    if not match or text in ("P", "PT"):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 1440 + hours * 60 + minutes + seconds / 60


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _num(text: str) -> float | None:
    return checked_float(text) if text and re.fullmatch(r"\d+(?:\.\d+)?", text[:MAX_LINE]) else None


# --------------------------------------------------------------------------- macOS ioreg

_IOREG_INDENT = re.compile(r"[|\s]*")
_WORD = re.compile(r"\w+")


def _ioreg_pair(line: str) -> tuple[str, str] | None:
    """``  | "Key" = value`` as (key, value); string operations instead of a backtracking regex."""
    body = line[_IOREG_INDENT.match(line).end() :]  # type: ignore[union-attr]  # a star pattern always matches
    if not body.startswith('"'):
        return None
    key, quote, rest = body[1:].partition('"')
    before, equals, value = rest.partition("=")
    if not quote or not equals or before.strip() or not value.strip() or not _WORD.fullmatch(key):
        return None
    return key, value.strip()


def parse_ioreg_battery(text: str, problems: list[str] | None = None) -> BatteryHealth | None:
    """``ioreg -r -n AppleSmartBattery`` (mAh); ``None`` on Macs without a battery."""
    sink = problems if problems is not None else []
    values: dict[str, str] = {}
    for line in text.splitlines():
        pair = _ioreg_pair(line[:MAX_LINE])
        if pair and pair[0] not in values:
            values[pair[0]] = pair[1]

    def _int_value(key: str) -> int | None:
        text = values.get(key)
        return guarded(sink, key, checked_int, text) if text and text.isdecimal() else None

    if not values:
        if "AppleSmartBattery" in text or not text.strip():
            return None
        raise ParseError("not ioreg output")
    design = _int_value("DesignCapacity")
    # Apple silicon reports MaxCapacity as a percentage; the mAh value is AppleRawMaxCapacity.
    full = _int_value("AppleRawMaxCapacity") or _int_value("NominalChargeCapacity")
    if full is None:
        max_capacity = _int_value("MaxCapacity")
        full = max_capacity if max_capacity is not None and (design is None or max_capacity > 100) else None
    if not design or full is None:
        return None
    temp = _int_value("Temperature")
    return build_lenient(
        BatteryHealth,
        {
            "design_capacity": float(design),
            "full_charge_capacity": float(full),
            "unit": "mAh",
            "cycle_count": _int_value("CycleCount"),
            "temperature_c": temp / 100.0 if temp is not None else None,  # centi-degrees
        },
        required=("design_capacity", "full_charge_capacity"),
        problems=sink,
    )


# --------------------------------------------------------------------------- Windows WMI

WMI_SCRIPT = (
    "$s = Get-CimInstance -Namespace root/wmi -ClassName BatteryStaticData | Select-Object -First 1; "
    "$f = Get-CimInstance -Namespace root/wmi -ClassName BatteryFullChargedCapacity | Select-Object -First 1; "
    "$c = Get-CimInstance -Namespace root/wmi -ClassName BatteryCycleCount -ErrorAction SilentlyContinue "
    "| Select-Object -First 1; "
    "@{DesignedCapacity=$s.DesignedCapacity; FullChargedCapacity=$f.FullChargedCapacity; "
    "CycleCount=$c.CycleCount} | ConvertTo-Json -Compress"
)
"""PowerShell run by the collector when powercfg is unavailable (e.g. Server SKUs, restricted shells)."""


def parse_wmi_battery(text: str) -> BatteryHealth | None:
    """Output of :data:`WMI_SCRIPT` (mWh); ``None`` when WMI knows no battery."""
    import json

    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ParseError(f"WMI battery output is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError("WMI battery output must be a JSON object")
    design, full, cycles = (doc.get(k) for k in ("DesignedCapacity", "FullChargedCapacity", "CycleCount"))
    if not isinstance(design, int) or not isinstance(full, int) or not _is_count(design) or not _is_count(full):
        return None
    if not design:
        return None
    return build_lenient(
        BatteryHealth,
        {
            "design_capacity": float(design),
            "full_charge_capacity": float(full),
            "unit": "mWh",
            "cycle_count": cycles if _is_count(cycles) and cycles else None,
        },
        required=("design_capacity", "full_charge_capacity"),
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

"""smartctl output (``--json`` and the text of ``-a``/``-x``, ATA/NVMe/SCSI) to :class:`DiskHealth`.

The agent itself runs ``smartctl --json``; the text parser exists because older smartctl builds
(and captures attached to tickets) only have text, and because the real-world corpus we test
against is mostly text. Both parsers keep only the failure-predicting attributes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fleetpulse.agents.parsers.common import (
    MAX_DIGITS,
    ParseError,
    bounded_lines,
    build_lenient,
    checked_int,
    first_int,
    first_number,
    grouped_int,
    guarded,
    valid_text,
)
from fleetpulse.contract import DiskHealth, DiskKind

SerialHasher = Callable[[str], str]

ATA_COUNTERS = {
    5: "reallocated_sectors",
    187: "reported_uncorrect",
    188: "command_timeout",
    197: "current_pending_sectors",
    198: "offline_uncorrectable",
    199: "udma_crc_errors",
}
ATA_POWER_ON = 9
ATA_TEMPERATURES = (194, 190)  # 190 (airflow) only when 194 is missing

NVME_LOG_FIELDS = {
    "critical_warning": "critical_warning",
    "available_spare": "available_spare_pct",
    "available_spare_threshold": "available_spare_threshold_pct",
    "percentage_used": "percentage_used",
    "media_errors": "media_errors",
    "num_err_log_entries": "num_err_log_entries",
    "unsafe_shutdowns": "unsafe_shutdowns",
}


def _serial(raw: str | None, hasher: SerialHasher | None) -> str | None:
    """Serials travel only hashed; anonymised placeholders (``--``, ``9RK1XXXX``-style masks kept) are dropped."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw or set(raw) <= {"-", ".", " "} or hasher is None:
        return None
    return hasher(raw)


def _hours_from_attr9(name: str, raw: int) -> int:
    """Attribute 9 is hours on most drives, but some vendors count minutes, half-minutes or seconds."""
    lowered = name.lower()
    if "half_min" in lowered:
        return raw // 120
    if "minute" in lowered:
        return raw // 60
    if "second" in lowered:
        return raw // 3600
    return raw


# --------------------------------------------------------------------------- JSON


class _AbsurdNumber:
    """Stands in for a JSON integer too long to convert, so the rest of the document still parses."""


def _json_int(text: str) -> int | _AbsurdNumber:
    try:
        return checked_int(text)
    except ParseError:
        return _AbsurdNumber()


def _absurd_numbers(doc: Any) -> list[str]:
    """``path: reason`` for each integer :func:`_json_int` refused (iterative: no recursion limit)."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack += [(f"{path}.{str(key)[:64]}".lstrip("."), value) for key, value in node.items()]
        elif isinstance(node, list):
            stack += [(f"{path}[{index}]", value) for index, value in enumerate(node)]
        elif isinstance(node, _AbsurdNumber):
            found.append(f"{path[:256]}: a number of more than {MAX_DIGITS} digits")
    return found


def parse_smartctl_json(
    text: str | bytes,
    *,
    name: str | None = None,
    hasher: SerialHasher | None = None,
    problems: list[str] | None = None,
) -> DiskHealth:
    """One ``smartctl --json -a/-x`` document to a :class:`DiskHealth`.

    Values that cannot be used (a 5000-digit integer, a temperature the contract rejects) cost only
    their field; each is named in ``problems`` when a list is given.
    """
    sink = problems if problems is not None else []
    try:
        doc = json.loads(text, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError("smartctl JSON must be an object")
    device: dict[str, Any] = doc["device"] if isinstance(doc.get("device"), dict) else {}
    has_data = any(
        k in doc
        for k in ("model_name", "smart_status", "ata_smart_attributes", "nvme_smart_health_information_log", "product")
    )
    if not has_data:
        raise ParseError("no device data in smartctl JSON (a scan listing or a failed run)")
    sink += _absurd_numbers(doc)

    fields: dict[str, Any] = {
        "name": valid_text(str(device.get("name") or name or "unknown"))[:128],
        "model": _str(doc.get("model_name")) or _str(doc.get("product")),
        "serial_hash": _serial(_str(doc.get("serial_number")), hasher),
        "firmware": _str(doc.get("firmware_version")) or _str(doc.get("revision")),
        "capacity_bytes": _dig(doc, "user_capacity", "bytes") or _int(doc.get("nvme_total_capacity")),
        "kind": _json_kind(doc, device),
    }
    status = doc.get("smart_status")
    if isinstance(status, dict) and isinstance(status.get("passed"), bool):
        fields["smart_passed"] = status["passed"]
    fields["power_on_hours"] = _dig(doc, "power_on_time", "hours")
    fields["temperature_c"] = _dig(doc, "temperature", "current")

    table = _dig(doc, "ata_smart_attributes", "table")
    if isinstance(table, list):
        _json_ata_attributes(table, fields, sink)
    nvme = doc.get("nvme_smart_health_information_log")
    if isinstance(nvme, dict):
        for src, dst in NVME_LOG_FIELDS.items():
            fields[dst] = _int(nvme.get(src))
        fields["temperature_c"] = fields["temperature_c"] or _int(nvme.get("temperature"))
        fields["power_on_hours"] = fields["power_on_hours"] or _int(nvme.get("power_on_hours"))
    defects = _int(doc.get("scsi_grown_defect_list"))
    if defects is not None:
        fields["reallocated_sectors"] = defects
    errlog = doc.get("scsi_error_counter_log")
    if isinstance(errlog, dict):
        totals = [_dig(errlog, op, "total_uncorrected_errors") for op in ("read", "write", "verify")]
        if any(t is not None for t in totals):
            fields["reported_uncorrect"] = sum(t or 0 for t in totals)
    return build_lenient(DiskHealth, fields, required=("name",), problems=sink)


def _json_kind(doc: dict[str, Any], device: dict[str, Any]) -> DiskKind:
    protocol = str(device.get("protocol") or device.get("type") or "").lower()
    if "nvme" in protocol or "nvme_smart_health_information_log" in doc:
        return DiskKind.NVME
    rotation = doc.get("rotation_rate")
    if isinstance(rotation, int) and not isinstance(rotation, bool):
        return DiskKind.SSD if rotation == 0 else DiskKind.HDD
    return DiskKind.UNKNOWN


def _json_ata_attributes(table: list[Any], fields: dict[str, Any], problems: list[str]) -> None:
    temps: dict[int, int] = {}
    for attr in table:
        if not isinstance(attr, dict) or not isinstance(attr.get("id"), int):
            continue
        raw: dict[str, Any] = attr["raw"] if isinstance(attr.get("raw"), dict) else {}
        raw_string = raw.get("string")
        if isinstance(raw_string, str):
            value = guarded(problems, f"ata_smart_attributes id {attr['id']}", first_int, raw_string)
        else:
            value = _int(raw.get("value"))
        if value is None:
            continue
        attr_id = attr["id"]
        if attr_id in ATA_COUNTERS:
            fields[ATA_COUNTERS[attr_id]] = value
        elif attr_id == ATA_POWER_ON and fields.get("power_on_hours") is None:
            fields["power_on_hours"] = _hours_from_attr9(str(attr.get("name", "")), value)
        elif attr_id in ATA_TEMPERATURES:
            temps[attr_id] = value
    if fields.get("temperature_c") is None:
        fields["temperature_c"] = next((temps[i] for i in ATA_TEMPERATURES if i in temps), None)


def _str(value: Any) -> str | None:
    return value.strip()[:128] if isinstance(value, str) and value.strip() else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return _int(doc) if not isinstance(doc, dict | list) else doc


# --------------------------------------------------------------------------- text

_ATTR_ROW = re.compile(r"^\s*(\d{1,3})\s+(\S+)\s+(.*)$")
_HEALTH_ATA = "SMART overall-health self-assessment test result"
_HEALTH_SCSI = "SMART Health Status"
# the last column of a row of the SCSI "Error counter log" is "Total uncorrected errors"
_SCSI_ERROR_ROW = re.compile(r"^(?:read|write|verify):\s+(?:[\d.,]+\s+){5,6}(\d+)$")


def _key_value(line: str) -> tuple[str, str] | None:
    """``Key: value`` with a key of 2..61 characters starting with a letter (linear: no regex backtracking)."""
    key, colon, value = line.partition(":")
    if not colon or not 2 <= len(key) <= 61 or not ("A" <= key[0] <= "Z" or "a" <= key[0] <= "z"):
        return None
    return key, value.strip()


def parse_smartctl_text(
    text: str, *, name: str | None = None, hasher: SerialHasher | None = None, problems: list[str] | None = None
) -> DiskHealth:
    """The text of ``smartctl -a``/``-x`` (ATA classic or brief tables, NVMe log, SCSI) to :class:`DiskHealth`.

    Runs in linear time on any text (lines are cut to ``MAX_LINE``); a value that cannot be used (a
    5000-digit number) costs only its field, named in ``problems`` when a list is given.
    """
    sink = problems if problems is not None else []
    info: dict[str, str] = {}
    lines = bounded_lines(text)
    for line in lines:
        pair = _key_value(line)
        if pair and pair[0] not in info:
            info[pair[0].strip()] = pair[1]

    model = info.get("Device Model") or info.get("Model Number") or info.get("Product")
    if model is None and _HEALTH_ATA not in info and _HEALTH_SCSI not in info and "Critical Warning" not in info:
        raise ParseError("no device information in smartctl text (a scan listing, probe or failed run)")

    is_nvme = "Critical Warning" in info or "Model Number" in info
    fields: dict[str, Any] = {
        "name": (name or "unknown")[:128],
        "model": (model or "").strip()[:128] or None,
        "serial_hash": _serial(info.get("Serial Number") or info.get("Serial number"), hasher),
        "firmware": info.get("Firmware Version") or info.get("Revision"),
        "capacity_bytes": _text_capacity(info, sink),
        "kind": _text_kind(info, is_nvme),
    }
    health = info.get(_HEALTH_ATA)
    if health is not None:
        fields["smart_passed"] = health.upper().startswith("PASSED")
    elif _HEALTH_SCSI in info:
        fields["smart_passed"] = info[_HEALTH_SCSI].upper().startswith("OK")

    if is_nvme:
        _text_nvme(info, fields, sink)
    _text_ata_attributes(lines, fields, sink)
    _text_scsi(info, lines, fields, sink)
    if fields.get("temperature_c") is None:
        for key in ("Current Temperature", "Current Drive Temperature", "Temperature"):
            if (value := guarded(sink, key, first_number, info.get(key))) is not None:
                fields["temperature_c"] = value
                break
    return build_lenient(DiskHealth, fields, required=("name",), problems=sink)


def _text_capacity(info: dict[str, str], problems: list[str]) -> int | None:
    for key in ("User Capacity", "Total NVM Capacity", "Namespace 1 Size/Capacity"):
        if value := guarded(problems, key, grouped_int, info.get(key)):
            return value
    return None


def _text_kind(info: dict[str, str], is_nvme: bool) -> DiskKind:
    if is_nvme:
        return DiskKind.NVME
    rotation = info.get("Rotation Rate", "").lower()
    if "solid state" in rotation:
        return DiskKind.SSD
    if "rpm" in rotation:
        return DiskKind.HDD
    return DiskKind.UNKNOWN


def _text_nvme(info: dict[str, str], fields: dict[str, Any], problems: list[str]) -> None:
    fields["critical_warning"] = guarded(problems, "Critical Warning", _critical_warning, info.get("Critical Warning"))
    for key, dst in (
        ("Available Spare", "available_spare_pct"),
        ("Available Spare Threshold", "available_spare_threshold_pct"),
        ("Percentage Used", "percentage_used"),
        ("Power On Hours", "power_on_hours"),
        ("Unsafe Shutdowns", "unsafe_shutdowns"),
        ("Media and Data Integrity Errors", "media_errors"),
        ("Error Information Log Entries", "num_err_log_entries"),
    ):
        if key in info:
            fields[dst] = guarded(problems, key, grouped_int, info[key])
    if "Temperature" in info:
        fields["temperature_c"] = guarded(problems, "Temperature", first_number, info["Temperature"])


def _critical_warning(text: str) -> int | None:
    """``0x00`` (the usual form) or a decimal; anything else is not a reading."""
    token = text.split(maxsplit=1)[0] if text.strip() else ""
    if token[:2].lower() == "0x" and 2 < len(token) <= 18:
        try:
            return int(token, 16)
        except ValueError:
            return None
    return checked_int(token) if token.isdecimal() else None


def _text_ata_attributes(lines: list[str], fields: dict[str, Any], problems: list[str]) -> None:
    """Both table styles: brief (``FLAGS VALUE WORST THRESH FAIL RAW``) and classic (10 columns)."""
    raw_column: int | None = None
    temps: dict[int, int] = {}
    for line in lines:
        if line.startswith("ID# ATTRIBUTE_NAME"):
            raw_column = 9 if "WHEN_FAILED" in line else 7
            continue
        if raw_column is None:
            continue
        match = _ATTR_ROW.match(line)
        if not match:
            if not line.strip() or not line.startswith(" "):
                raw_column = None
            continue
        tokens = line.split()
        if len(tokens) <= raw_column:
            continue
        attr_id, attr_name = int(tokens[0]), tokens[1]
        raw = guarded(problems, f"attribute {attr_id} {attr_name[:32]}", first_int, " ".join(tokens[raw_column:]))
        if raw is None:
            continue
        if attr_id in ATA_COUNTERS:
            fields[ATA_COUNTERS[attr_id]] = raw
        elif attr_id == ATA_POWER_ON:
            fields["power_on_hours"] = _hours_from_attr9(attr_name, raw)
        elif attr_id in ATA_TEMPERATURES:
            temps[attr_id] = raw
    if temps:
        fields["temperature_c"] = next(temps[i] for i in ATA_TEMPERATURES if i in temps)


def _text_scsi(info: dict[str, str], lines: list[str], fields: dict[str, Any], problems: list[str]) -> None:
    """SAS drives: grown defects stand in for reallocations, uncorrected errors for 187."""
    defects = "Elements in grown defect list"
    if defects in info:
        fields["reallocated_sectors"] = guarded(problems, defects, grouped_int, info[defects])
    hours_key = "Accumulated power on time, hours:minutes"
    if (value := guarded(problems, hours_key, first_int, info.get(hours_key) or None)) is not None:
        fields["power_on_hours"] = value
    uncorrected: list[int] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("number of hours powered up ="):
            value_f = guarded(problems, "number of hours powered up", first_number, stripped)
            if value_f is not None:
                fields["power_on_hours"] = int(value_f)
        match = _SCSI_ERROR_ROW.match(stripped)
        if match and (errors := guarded(problems, "total uncorrected errors", checked_int, match.group(1))) is not None:
            uncorrected.append(errors)
    if uncorrected:
        fields["reported_uncorrect"] = sum(uncorrected)

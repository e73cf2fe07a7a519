"""The largest report the wire contract accepts, built from the contract's own JSON schema.

Every list at its ``maxItems``, every string at its ``maxLength`` in 4-byte characters (distinct
per list item, so disks get distinct keys), every number at the value with the longest JSON form under its
``maximum``. Built from ``HealthReport.model_json_schema()`` so that a raised limit in
``fleetpulse/contract/v1.py`` makes the byte-bound tests harder automatically. Collector errors
(never kept in the state) are then shortened until the record fits the codec's message limit.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from fleetpulse.compat import UTC
from fleetpulse.contract import HealthReport, encode
from fleetpulse.contract.codec import MAX_MESSAGE_BYTES

DEVICE_ID = "pc-" + "9" * 61  # the id pattern's maximum length (64)
WIDEST_CHAR = "\U0001f4be"  # 4 bytes in UTF-8: free text at its length limit in characters is largest in bytes


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolve(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        present = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _resolve(present[0], defs)
    return schema


def _longest_number(schema: dict[str, Any]) -> float:
    """The float just under the maximum: 17 significant digits, the longest JSON form in range."""
    return math.nextafter(float(schema.get("maximum", schema.get("exclusiveMaximum", 1e6))), -math.inf)


def _value(name: str, schema: dict[str, Any], defs: dict[str, Any], index: int) -> Any:
    schema = _resolve(schema, defs)
    kind = schema.get("type")
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(str(v)))
    if "const" in schema:
        return schema["const"]
    if kind == "object":
        return {field: _value(field, sub, defs, index) for field, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_value(name, schema["items"], defs, i) for i in range(schema.get("maxItems", 1))]
    if kind == "integer":
        return int(schema.get("maximum", 2**31))
    if kind == "number":
        return _longest_number(schema)
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return "2026-01-01T00:00:00Z"
        if schema.get("format") == "date":
            return "2026-01-01"
        length = schema.get("maxLength", 128)
        return f"{name}-{index}-".ljust(length, WIDEST_CHAR)[:length]
    raise AssertionError(f"no largest value for {name}: {schema}")


@cache
def _largest_body() -> HealthReport:
    schema = HealthReport.model_json_schema()
    defs = schema.get("$defs", {})
    body = {field: _value(field, sub, defs, 0) for field, sub in schema["properties"].items()}
    body.update(device_id=DEVICE_ID, seq=1, collected_at="2026-01-01T00:00:00Z")
    report = HealthReport.model_validate(body)
    errors = list(report.collector_errors)
    while errors and len(encode(report)) > MAX_MESSAGE_BYTES:
        excess = len(encode(report)) - MAX_MESSAGE_BYTES
        per_error = len(encode(errors[0]))
        errors = errors[: max(0, len(errors) - 1 - excess // per_error)]
        report = report.model_copy(update={"collector_errors": errors})
    return report


def largest_report(seq: int, at: datetime) -> HealthReport:
    """The largest valid report of one device, ``seq`` and ``collected_at`` set by the caller."""
    return _largest_body().model_copy(update={"seq": seq, "collected_at": at.astimezone(UTC)})


def daily_rounds(start: datetime, days: int) -> list[HealthReport]:
    """The largest report once a day for ``days`` days."""
    return [largest_report(day + 1, start + timedelta(days=day)) for day in range(days)]

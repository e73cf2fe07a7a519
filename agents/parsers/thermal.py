"""Temperatures and fans as psutil reports them (Linux hwmon/ACPI) to :class:`ThermalHealth`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fleetpulse.agents.parsers.common import build_lenient
from fleetpulse.contract import ThermalHealth

CPU_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal")


def thermal_from_sensors(
    temperatures: Mapping[str, Sequence[Any]],
    fans: Mapping[str, Sequence[Any]],
    throttle_events: int | None = None,
) -> ThermalHealth | None:
    """``psutil.sensors_temperatures()`` / ``sensors_fans()`` entries (objects with ``.current``)."""
    cpu: list[float] = []
    every: list[float] = []
    for chip, readings in temperatures.items():
        for reading in readings:
            value = _finite(getattr(reading, "current", None))
            if value is None or not -40.0 <= value <= 150.0:
                continue  # disconnected sensors report -273 or 255
            every.append(value)
            if chip.lower() in CPU_CHIPS:
                cpu.append(value)
    rpm = [
        v for r in (r for rs in fans.values() for r in rs) if (v := _finite(getattr(r, "current", None))) is not None
    ]
    if not every and not rpm and throttle_events is None:
        return None
    return build_lenient(
        ThermalHealth,
        {
            "cpu_max_c": max(cpu) if cpu else None,
            "sensors_max_c": max(every) if every else None,
            "fan_rpm": [v for v in rpm if 0.0 <= v <= 30_000.0][:16],
            "throttle_events": throttle_events,
        },
    )


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

"""CPU/board temperatures, fans and thermal throttling (psutil; Linux sysfs for throttle counts)."""

from __future__ import annotations

from pathlib import Path

import psutil

from fleetpulse.agents.collectors.base import CollectorContext, Section
from fleetpulse.agents.parsers.thermal import thermal_from_sensors

CPU_SYSFS = Path("/sys/devices/system/cpu")


class ThermalCollector:
    name = "thermal"

    def __init__(self, ctx: CollectorContext, timeout_s: float, cpu_sysfs: Path = CPU_SYSFS) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.cpu_sysfs = cpu_sysfs

    def collect(self) -> Section:
        temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        fans = psutil.sensors_fans() if hasattr(psutil, "sensors_fans") else {}
        thermal = thermal_from_sensors(temps, fans, self._throttle_count())
        return {"thermal": thermal} if thermal is not None else {}

    def _throttle_count(self) -> int | None:
        """Cumulative package+core throttle events since boot (Intel ``thermal_throttle``), if exposed."""
        total, seen = 0, False
        for path in self.cpu_sysfs.glob("cpu[0-9]*/thermal_throttle/core_throttle_count"):
            try:
                total += int(path.read_text().strip())
                seen = True
            except (OSError, ValueError):
                continue
        return total if seen else None

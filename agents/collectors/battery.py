"""Battery wear: Linux sysfs (upower as fallback), Windows powercfg, macOS ioreg."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from fleetpulse.agents.collectors.base import CollectorContext, CollectorUnavailable, Section, run_tool
from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.battery import (
    WMI_SCRIPT,
    parse_ioreg_battery,
    parse_power_supply_uevent,
    parse_powercfg_battery_report,
    parse_upower,
    parse_wmi_battery,
)
from fleetpulse.contract import BatteryHealth, Platform

POWER_SUPPLY = Path("/sys/class/power_supply")


class BatteryCollector:
    name = "battery"
    event_source = True
    """Run by the agent's event probe between reports (see :mod:`fleetpulse.agents.events`)."""

    def __init__(self, ctx: CollectorContext, timeout_s: float, sysfs_root: Path = POWER_SUPPLY) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.sysfs_root = sysfs_root

    def collect(self) -> Section:
        battery = {
            Platform.WINDOWS: self._windows,
            Platform.MACOS: self._macos,
        }.get(self.ctx.platform, self._linux)()
        return {"battery": battery} if battery is not None else {}

    def _linux(self) -> BatteryHealth | None:
        for uevent in sorted(self.sysfs_root.glob("*/uevent")):
            try:
                battery = parse_power_supply_uevent(uevent.read_text(errors="replace"))
            except OSError:
                continue
            if battery is not None:
                return battery
        if self.sysfs_root.is_dir():
            return None  # sysfs is authoritative where it exists: no battery there means a desktop
        listing = run_tool(["upower", "-e"], self.timeout_s).stdout
        for path in listing.split():
            if "battery_" in path:
                battery = parse_upower(run_tool(["upower", "-i", path], self.timeout_s).stdout)
                if battery is not None:
                    return battery
        return None

    def _windows(self) -> BatteryHealth | None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "battery.xml"
                run_tool(["powercfg", "/batteryreport", "/xml", "/output", str(out)], self.timeout_s)
                if not out.exists():
                    raise CollectorUnavailable("powercfg wrote no battery report")
                batteries = parse_powercfg_battery_report(out.read_bytes())
            if batteries:
                return batteries[0]
        except (OSError, RuntimeError, ParseError, subprocess.SubprocessError):
            pass  # fall back to WMI below
        script = ["powershell", "-NoProfile", "-NonInteractive", "-Command", WMI_SCRIPT]
        return parse_wmi_battery(run_tool(script, self.timeout_s).stdout)

    def _macos(self) -> BatteryHealth | None:
        return parse_ioreg_battery(run_tool(["ioreg", "-r", "-n", "AppleSmartBattery"], self.timeout_s).stdout)

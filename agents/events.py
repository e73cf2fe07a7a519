"""Health events that must not wait for the next regular report.

The agent reports every 15 minutes; a disk that starts reallocating sectors, a battery that
wears below a service threshold or a crash is sent at once instead. Between reports a cheap
probe runs only the collectors that can see such events (crash dumps, boot check, battery,
SMART within its own hourly limit) and compares what they saw with the last report sent.
Growth, not level, is the event: a disk with 8 old reallocated sectors is not news every hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetpulse.agents.collectors.base import Section
from fleetpulse.contract import BatteryHealth, DiskHealth, StabilityHealth

DISK_ERROR_COUNTERS = (
    "reallocated_sectors",
    "current_pending_sectors",
    "offline_uncorrectable",
    "reported_uncorrect",
    "media_errors",
)
"""SMART/NVMe counters whose growth means the medium is failing now."""

BATTERY_EVENT_RATIOS = (0.8, 0.6)
"""Full-charge over design capacity: the service and worn-out thresholds of the battery model."""


def _disk_key(disk: DiskHealth) -> str:
    return disk.serial_hash or disk.name


def battery_band(battery: BatteryHealth | None, ratios: Sequence[float] = BATTERY_EVENT_RATIOS) -> int:
    """How many wear thresholds the battery is below (0: healthy or no battery)."""
    if battery is None:
        return 0
    return sum(1 for ratio in ratios if battery.health_ratio < ratio)


@dataclass
class EventBaseline:
    """What the last report sent said; the probe's findings are judged against it."""

    disks: dict[str, DiskHealth] = field(default_factory=dict)
    battery_band: int = 0

    def remember(self, section: Section) -> None:
        for disk in section.get("disks", []):
            self.disks[_disk_key(disk)] = disk
        battery = section.get("battery")
        if battery is not None:
            self.battery_band = battery_band(battery)


def health_events(baseline: EventBaseline, section: Section) -> list[str]:
    """The events in ``section`` (collected since the last report) that warrant a report now."""
    events: list[str] = []
    stability: StabilityHealth | None = section.get("stability")
    if stability is not None and stability.crashes:
        events.append("crash")
    if stability is not None and stability.unexpected_shutdowns:
        events.append("unexpected shutdown")
    for disk in section.get("disks", []):
        before = baseline.disks.get(_disk_key(disk))
        if disk.smart_passed is False and (before is None or before.smart_passed is not False):
            events.append(f"{disk.name}: SMART health failed")
        if (disk.critical_warning or 0) & ~((before.critical_warning or 0) if before else 0):
            events.append(f"{disk.name}: NVMe critical warning")
        for counter in DISK_ERROR_COUNTERS:
            now, then = getattr(disk, counter), getattr(before, counter, None) if before else None
            if (now or 0) > (then or 0):
                events.append(f"{disk.name}: {counter} grew")
    if battery_band(section.get("battery")) > baseline.battery_band:
        events.append("battery below threshold")
    return events

"""Asset facts the agent can read itself (vendor, model), for the compacted inventory topic.

Purchase date, site and department come from IT's asset register, not the device; the agent
leaves them empty rather than guess.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceInventory, DeviceKind, Platform

DMI = Path("/sys/class/dmi/id")


def _read(path: Path) -> str | None:
    try:
        value = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return value[:128] or None


def _mac_model() -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()[:128] or None


def collect_inventory(device_id: str, kind: DeviceKind, platform: Platform, dmi: Path = DMI) -> DeviceInventory:
    vendor: str | None
    model: str | None
    if platform == Platform.MACOS:
        vendor, model = "Apple", _mac_model()
    else:
        vendor, model = _read(dmi / "sys_vendor"), _read(dmi / "product_name")
    return DeviceInventory(device_id=device_id, kind=kind, vendor=vendor, model=model, updated_at=datetime.now(UTC))

"""Storage mapping to line protocol: what the sink writes and the dashboards query."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetpulse.contract import BatteryHealth, DeviceInventory, DiskHealth, HealthReport, StabilityHealth
from fleetpulse.streams.points import report_points

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_report_becomes_device_disk_and_battery_points() -> None:
    report = HealthReport(
        device_id="pc-1",
        seq=1,
        collected_at=AT,
        kind="laptop",
        platform="windows",
        disks=[DiskHealth(name="disk 0", serial_hash="ab12", kind="ssd", reallocated_sectors=3, smart_passed=True)],
        battery=BatteryHealth(design_capacity=50_000, full_charge_capacity=40_000, cycle_count=300),
        stability=StabilityHealth(crashes=2),
    )
    inventory = DeviceInventory(device_id="pc-1", kind="laptop", model="Latitude 7420", site="Town Hall", updated_at=AT)
    lines = [p.to_line_protocol() for p in report_points(report, inventory)]
    assert lines[0].startswith("device,device_id=pc-1,device_model=Latitude\\ 7420,kind=laptop,platform=windows,")
    assert "crashes=2i" in lines[0]
    assert lines[1] == (
        "disk,device_id=pc-1,device_model=Latitude\\ 7420,disk=ab12,disk_kind=ssd,site=Town\\ Hall "
        "reallocated_sectors=3i,smart_failed=0i 1793534400000000000"
    )
    assert "health_ratio=0.8" in lines[2]

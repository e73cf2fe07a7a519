"""Features shared within one scoring call, computed afresh outside it."""

from __future__ import annotations

from datetime import datetime

from fleetpulse.compat import UTC
from fleetpulse.contract import DiskHealth, HealthReport
from fleetpulse.models import feature_cache
from fleetpulse.models.features import disk_features
from fleetpulse.models.state import DeviceState, apply_report_in_place

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)


def state(sectors: int) -> DeviceState:
    report = HealthReport(
        device_id="pc-1",
        seq=1,
        collected_at=T0,
        kind="desktop",
        platform="linux",
        disks=[DiskHealth(name="sda", reallocated_sectors=sectors)],
    )  # type: ignore[arg-type]
    return apply_report_in_place(DeviceState(device_id="pc-1"), report)


def test_inside_a_scope_each_history_is_computed_once_and_nested_scopes_share_it() -> None:
    disk = state(3).disks["sda"]
    with feature_cache.shared_features():
        first = feature_cache.disk_features(disk)
        with feature_cache.shared_features():
            assert feature_cache.disk_features(disk) is first
        assert feature_cache.disk_features(disk) is first
    assert first == disk_features(disk)


def test_outside_a_scope_features_follow_the_state() -> None:
    """States change in place between scoring calls: nothing computed in one call serves the next."""
    device = state(3)
    disk = device.disks["sda"]
    with feature_cache.shared_features():
        assert feature_cache.disk_features(disk)["smart_5"] == 3.0
    disk.series.columns["reallocated_sectors"][-1] = 8.0
    assert feature_cache.disk_features(disk)["smart_5"] == 8.0
    with feature_cache.shared_features():
        assert feature_cache.disk_features(disk)["smart_5"] == 8.0
        assert feature_cache.disk_vector(disk)[0] == 8.0

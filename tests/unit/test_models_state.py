"""DeviceState: pure updates, event time, JSON round trip and the memory bound."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    DeviceInventory,
    DiskHealth,
    HealthReport,
    MemoryHealth,
    StabilityHealth,
    ThermalHealth,
)
from fleetpulse.models.state import (
    MAX_BATTERY_POINTS,
    MAX_DISKS,
    MAX_STATE_BYTES,
    WINDOW_DAYS,
    DailySeries,
    DeviceState,
    apply_inventory,
    apply_report,
    apply_report_in_place,
)

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)


def report(seq: int, at: datetime, **kw: object) -> HealthReport:
    return HealthReport(device_id="pc-1", seq=seq, collected_at=at, kind="laptop", platform="windows", **kw)  # type: ignore[arg-type]


def full_disk(name: str, value: int) -> DiskHealth:
    return DiskHealth(
        name=name,
        serial_hash=f"h-{name}",
        kind="nvme",
        reallocated_sectors=value,
        reported_uncorrect=value,
        command_timeout=value,
        current_pending_sectors=value,
        offline_uncorrectable=value,
        udma_crc_errors=value,
        media_errors=value,
        critical_warning=0,
        available_spare_pct=99.5,
        available_spare_threshold_pct=10.0,
        percentage_used=12.25,
        power_on_hours=12_345 + value,
        temperature_c=41.5,
        smart_passed=True,
    )


def test_apply_report_is_pure_and_uses_event_time() -> None:
    first = apply_report(None, report(1, T0, disks=[full_disk("a", 1)]))
    second = apply_report(first, report(2, T0 + timedelta(days=1), disks=[full_disk("a", 3)]))
    assert first.last_seq == 1
    assert first.disks["h-a"].series.column("reallocated_sectors") == [1.0]
    assert second.last_seq == 2
    assert second.last_collected_at == T0 + timedelta(days=1)
    assert second.disks["h-a"].series.column("reallocated_sectors") == [1.0, 3.0]
    assert second.disks["h-a"].series.days.tolist() == [T0.date().toordinal(), T0.date().toordinal() + 1]


def test_same_day_readings_merge_last_sum_and_mean() -> None:
    state = None
    for i, (ratio, crashes) in enumerate([(0.9, 1), (0.8, 2)]):
        state = apply_report(
            state,
            report(
                i,
                T0 + timedelta(hours=i),
                disks=[full_disk("a", i)],
                battery=BatteryHealth(design_capacity=100, full_charge_capacity=100 * ratio),
                stability=StabilityHealth(crashes=crashes, boot_duration_s=10 + 10 * i),
            ),
        )
    assert state is not None
    assert state.disks["h-a"].series.column("reallocated_sectors") == [1.0]
    assert state.device.column("crashes") == [3.0]
    assert state.device.column("boot_duration_s") == [15.0]
    assert state.battery is not None
    assert abs(state.battery.series.column("health_ratio")[0] - 0.85) < 1e-12  # type: ignore[operator]


def test_disk_window_is_bounded_and_old_disks_expire() -> None:
    state = None
    for day in range(100):
        disks = [full_disk("a", day)] + ([full_disk("old", 1)] if day < 10 else [])
        state = apply_report(state, report(day, T0 + timedelta(days=day), disks=disks))
    assert state is not None
    assert set(state.disks) == {"h-a"}
    assert len(state.disks["h-a"].series.days) == WINDOW_DAYS
    assert state.disks["h-a"].series.column("reallocated_sectors")[-1] == 99.0


def test_out_of_order_day_is_inserted_in_order() -> None:
    state = apply_report(None, report(1, T0 + timedelta(days=2), disks=[full_disk("a", 5)]))
    state = apply_report(state, report(2, T0, disks=[full_disk("a", 4)]))
    assert state.disks["h-a"].series.days.tolist() == [T0.date().toordinal(), T0.date().toordinal() + 2]
    assert state.disks["h-a"].series.column("reallocated_sectors") == [4.0, 5.0]


def test_battery_history_thins_but_keeps_span() -> None:
    state = DeviceState(device_id="pc-1")
    for day in range(1000):
        bat = BatteryHealth(design_capacity=100, full_charge_capacity=100 - day * 0.02, cycle_count=day)
        apply_report_in_place(state, report(day, T0 + timedelta(days=day), battery=bat))
    assert state.battery is not None
    days = state.battery.series.days
    assert len(days) <= MAX_BATTERY_POINTS
    assert days[-1] - days[0] > 900
    assert days[-120:].tolist() == list(range(days[-1] - 119, days[-1] + 1))


def test_new_design_capacity_starts_a_new_battery_history() -> None:
    state = apply_report(None, report(1, T0, battery=BatteryHealth(design_capacity=100, full_charge_capacity=70)))
    state = apply_report(
        state, report(2, T0 + timedelta(days=1), battery=BatteryHealth(design_capacity=90, full_charge_capacity=90))
    )
    assert state.battery is not None
    assert state.battery.series.column("health_ratio") == [1.0]


def test_worst_case_state_stays_under_the_byte_bound() -> None:
    """Every counter of MAX_DISKS (+ extra) disks every day for a year, plus a battery and device signals."""
    state = DeviceState(device_id="pc-1")
    for day in range(400):
        at = T0 + timedelta(days=day, hours=3)
        rep = report(
            day,
            at,
            disks=[full_disk(f"d{i}", 1_000_000 + day) for i in range(MAX_DISKS + 4)],
            battery=BatteryHealth(
                design_capacity=56_123.5,
                full_charge_capacity=50_001.25 - day,
                cycle_count=day,
                runtime_full_minutes=333.3,
            ),
            thermal=ThermalHealth(cpu_max_c=97.25, fan_rpm=[2345.5], throttle_events=day),
            memory=MemoryHealth(correctable_errors=day, uncorrectable_errors=1),
            stability=StabilityHealth(crashes=3, unexpected_shutdowns=1, boot_duration_s=31.7),
        )
        apply_report_in_place(state, rep)
    raw = state.model_dump_json()
    assert len(state.disks) == MAX_DISKS
    assert len(raw) < MAX_STATE_BYTES, len(raw)
    assert DeviceState.model_validate_json(raw) == state


def test_inventory_sets_asset_facts_without_touching_health() -> None:
    state = apply_report(None, report(3, T0, disks=[full_disk("a", 0)]))
    inv = DeviceInventory(
        device_id="pc-1",
        kind="laptop",
        model="T14",
        site="Town Hall",
        department="IT",
        updated_at=T0,
        warranty_end=T0.date(),
    )
    merged = apply_inventory(state, inv)
    assert merged.model == "T14"
    assert merged.site == "Town Hall"
    assert merged.warranty_end == T0.date()
    assert merged.last_seq == 3
    assert "h-a" in merged.disks
    assert state.model is None
    fresh = apply_inventory(None, inv)
    assert fresh.last_collected_at is None
    assert fresh.kind == "laptop"


@given(st.lists(st.tuples(st.integers(0, 60), st.floats(0, 1e9, allow_nan=False)), max_size=80))
def test_daily_series_stays_sorted_and_rectangular(readings: list[tuple[int, float]]) -> None:
    series = DailySeries()
    for day, value in readings:
        series.upsert(day, {"x": value, "y": value}, {"x": "last", "y": "mean"})
        series.keep_from(series.days[-1] - 30)
    assert series.days.tolist() == sorted(set(series.days))
    assert all(len(col) == len(series.days) for col in series.columns.values())


@given(
    st.lists(
        st.tuples(
            st.integers(0, 60), st.lists(st.none() | st.floats(-1e9, 1e9, allow_nan=False), min_size=3, max_size=3)
        ),
        max_size=40,
    )
)
def test_set_last_is_upsert_of_last_columns(readings: list[tuple[int, list[float | None]]]) -> None:
    """The disk counters' fast path stores what the generic fold stores, columns created in the same order."""
    names = ("a", "b", "c")
    fast, generic = DailySeries(), DailySeries()
    for day, values in readings:
        fast.set_last(day, names, values)
        generic.upsert(day, dict(zip(names, values, strict=True)), dict.fromkeys(names, "last"))
    assert fast == generic
    assert list(fast.columns) == list(generic.columns)

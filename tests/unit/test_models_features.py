"""Features computed by hand on small histories."""

from __future__ import annotations

import math
import random
import struct
from datetime import datetime, timedelta

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.compat import UTC
from fleetpulse.contract import BatteryHealth, DiskHealth, HealthReport, StabilityHealth, ThermalHealth
from fleetpulse.models.battery import fit_trend
from fleetpulse.models.features import (
    CURRENT_DISK,
    DISK_FEATURES,
    GROWTH_COUNTERS,
    battery_features,
    device_features,
    disk_features,
    growth_days,
    points,
    slope_standard_error,
    theil_sen,
    window_delta,
    window_slope,
)
from fleetpulse.models.state import (
    DISK_COUNTERS,
    DailySeries,
    DeviceState,
    DiskHistory,
    apply_report_in_place,
)

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)


def replay(days: list[int], **per_day: list[object]) -> DeviceState:
    state = DeviceState(device_id="pc-9")
    for i, day in enumerate(days):
        kw = {k: v[i] for k, v in per_day.items()}
        rep = HealthReport(
            device_id="pc-9", seq=i, collected_at=T0 + timedelta(days=day), kind="desktop", platform="linux", **kw
        )  # type: ignore[arg-type]
        apply_report_in_place(state, rep)
    return state


def test_window_helpers_by_hand() -> None:
    pts = [(0, 0.0), (10, 2.0), (25, 2.0), (29, 5.0), (30, 8.0)]
    assert window_delta(pts, 1) == 3.0  # day 30 minus day 29
    assert window_delta(pts, 7) == 6.0  # last value at or before day 23 is day 10's
    assert window_delta(pts, 30) == 8.0  # minus day 0
    assert window_delta(pts, 100) == 8.0  # shorter history: oldest value
    assert window_slope(pts, 30) == pytest.approx(8.0 / 30.0)
    assert growth_days(pts, 30) == 3.0  # grew on days 10, 29, 30 (day 0 is the first point)
    assert growth_days(pts, 7) == 2.0
    assert math.isnan(window_delta([], 7))


def test_disk_features_from_replayed_snapshots() -> None:
    values = [0, 0, 4, 4, 10]
    disks = [
        [
            DiskHealth(
                name="sda", serial_hash="s1", reallocated_sectors=v, power_on_hours=100 + 24 * i, smart_passed=True
            )
        ]
        for i, v in enumerate(values)
    ]
    state = replay([0, 1, 20, 28, 29], disks=disks)
    feats = disk_features(state.disks["s1"])
    assert set(feats) == set(DISK_FEATURES)
    assert feats["smart_5"] == 10.0
    assert feats["smart_5_delta_1d"] == 6.0
    assert feats["smart_5_delta_7d"] == 6.0
    assert feats["smart_5_delta_30d"] == 10.0
    assert feats["smart_5_growth_days_30d"] == 2.0
    assert feats["smart_5_slope_30d"] == pytest.approx(10.0 / 29.0)
    assert feats["power_on_hours"] == 196.0
    assert feats["smart_failed"] == 0.0
    assert feats["history_days"] == 30.0
    assert math.isnan(feats["smart_187"])
    assert math.isnan(feats["smart_187_delta_7d"])
    assert math.isnan(feats["spare_margin_pct"])


def test_nvme_spare_margin() -> None:
    disk = DiskHealth(
        name="nvme0", kind="nvme", available_spare_pct=8.0, available_spare_threshold_pct=10.0, media_errors=2
    )
    feats = disk_features(replay([0], disks=[[disk]]).disks["nvme0"])
    assert feats["spare_margin_pct"] == -2.0
    assert feats["media_errors"] == 2.0


def test_theil_sen_ignores_an_outlier() -> None:
    x = [0, 1, 2, 3, 4, 5, 6]
    y = [1.0, 0.99, 0.98, 0.5, 0.96, 0.95, 0.94]
    slope, level = theil_sen(x, y)
    assert slope == pytest.approx(-0.01)
    assert level == pytest.approx(0.94)


def test_theil_sen_does_not_depend_on_input_order() -> None:
    """Pairs were taken in input order and only rising ones kept: a shuffled history lost most pairs.
    The slope is the median over every pair with distinct x, as ``scipy.stats.theilslopes`` computes it."""
    rng = random.Random(17)
    x = [rng.uniform(0, 200) for _ in range(40)] + [50.0, 50.0]  # a tie in x is no pair
    y = [0.95 - 0.001 * d + rng.gauss(0, 0.01) for d in x]
    slope, level = theil_sen(x, y)
    assert slope == pytest.approx(scipy.stats.theilslopes(y, x).slope, rel=1e-12)
    for _ in range(5):
        order = rng.sample(range(len(x)), len(x))
        shuffled = theil_sen([x[k] for k in order], [y[k] for k in order])
        assert shuffled == pytest.approx((slope, level), rel=1e-12)
    same_cycles = [0.0, 100.0, 100.0, 300.0]  # cycle counts repeat and need not rise in report order
    assert theil_sen(same_cycles[::-1], [1.0, 0.9, 0.9, 0.8]) == pytest.approx(
        theil_sen(same_cycles, [0.8, 0.9, 0.9, 1.0])
    )


def test_slope_standard_error_grows_with_scatter_and_shrinks_with_span() -> None:
    x = list(range(30))
    line = [2.0 * d for d in x]
    assert slope_standard_error(x, line, *theil_sen(x, line)) == pytest.approx(0.0, abs=1e-12)
    zigzag = [2.0 * d + (10.0 if d % 2 else -10.0) for d in x]
    wide = slope_standard_error(x, zigzag, *theil_sen(x, zigzag))
    half = slope_standard_error(x[:14], zigzag[:14], *theil_sen(x[:14], zigzag[:14]))
    assert 0.0 < wide < half
    assert math.isnan(slope_standard_error([0, 1], [0.0, 1.0], 1.0, 1.0))


def test_battery_features_and_crossing() -> None:
    days = list(range(0, 100, 2))
    bats = [BatteryHealth(design_capacity=1000, full_charge_capacity=950 - 1.0 * d, cycle_count=d) for d in days]
    state = replay(days, battery=bats)
    assert state.battery is not None
    feats = battery_features(state.battery)
    assert feats["health_ratio"] == pytest.approx(0.852)
    assert feats["fade_per_day"] == pytest.approx(0.001)
    assert feats["fade_per_100_cycles"] == pytest.approx(0.1)
    assert feats["cycle_count"] == 98.0
    trend = fit_trend([float(d) for d in days], [0.95 - 0.001 * d for d in days])
    assert trend is not None
    ahead = trend.crossing(0.8)
    assert ahead.days == pytest.approx(52.0)
    assert ahead.low < 52.0 < ahead.high  # calibrated interval: see test_models_battery
    short = fit_trend([0.0, 1.0, 2.0], [0.7, 0.69, 0.68])
    assert short is not None
    below = short.crossing(0.8)
    assert below.days == 0.0
    assert fit_trend([0.0, 1.0], [0.9, 0.89]) is None


def test_device_features_windows() -> None:
    days = [0, 10, 25, 28, 29]
    stab = [
        StabilityHealth(crashes=c, boot_duration_s=b)
        for c, b in zip([5, 1, 2, 0, 3], [20, 22, 30, 34, 36], strict=True)
    ]
    therm = [ThermalHealth(cpu_max_c=t) for t in [70, 99, 80, 96, 75]]
    feats = device_features(replay(days, stability=stab, thermal=therm))
    assert feats["crashes_1d"] == 3.0
    assert feats["crashes_7d"] == 5.0  # days 25, 28, 29
    assert feats["crashes_30d"] == 11.0
    assert feats["thermal_excursions_7d"] == 1.0
    assert feats["thermal_excursions_30d"] == 2.0
    assert feats["cpu_max_c_7d"] == 96.0
    assert feats["boot_duration_s_7d"] == 34.0
    assert feats["boot_duration_trend_s_per_day"] > 0.4
    assert feats["active_days_30d"] == 5.0


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.integers(0, 60), max_size=35, unique=True).map(sorted),
    columns=st.dictionaries(
        st.sampled_from(sorted({*DISK_COUNTERS})),
        st.one_of(
            st.sampled_from([0.0, 3.0, 1e300]).map(lambda v: ("constant", v)),
            st.just(("scattered", 0.0)),
        ),
    ),
    seed=st.integers(0, 2**32),
)
def test_disk_features_equal_the_full_scans_bit_for_bit(
    days: list[int], columns: dict[str, tuple[str, float]], seed: int
) -> None:
    """The shortcuts (a counter constant over its history, the newest value read from the end) give the
    features every scan gives, including a history with missing days and one value only."""
    rng = random.Random(seed)
    values: dict[str, list[float | None]] = {
        name: [v if how == "constant" else rng.choice([None, float(rng.randint(0, 9))]) for _ in days]
        for name, (how, v) in columns.items()
    }
    series = DailySeries(days=[700_000 + d for d in days], columns=values)
    disk = DiskHistory(name="sda", first_seen=T0, last_seen=T0, series=series)
    expected: dict[str, float] = {}
    for feature, column in CURRENT_DISK.items():
        pts = points(series, column)
        expected[feature] = pts[-1][1] if pts else math.nan
        if feature in GROWTH_COUNTERS:
            expected.update(
                {f"{feature}_delta_{w}d": window_delta(pts, w) if pts else math.nan for w in (1, 7, 30)},
            )
            expected[f"{feature}_slope_30d"] = window_slope(pts, 30) if pts else math.nan
            expected[f"{feature}_growth_days_30d"] = growth_days(pts, 30) if pts else math.nan
    got = disk_features(disk)
    for name, value in expected.items():
        assert struct.pack("<d", got[name]) == struct.pack("<d", value) or (math.isnan(got[name]) and math.isnan(value))


def test_boot_median_is_numpys() -> None:
    """The typical boot time is the median numpy computes, also for an even count (mean of the middle two)."""
    state = replay([0, 1, 2, 3], stability=[StabilityHealth(boot_duration_s=s) for s in (30.1, 45.7, 31.3, 60.9)])
    assert device_features(state)["boot_duration_s_7d"] == float(np.median([30.1, 45.7, 31.3, 60.9]))

"""Runtime under 3 h via the capacity trend: robust to runtime readings that scatter with workload."""

from __future__ import annotations

import numpy as np

from fleetpulse.models.battery import MIN_RUNTIME_MINUTES, battery_crossing, minutes_per_ratio, runtime_crossing
from fleetpulse.models.battery_eval import Series, _replay
from fleetpulse.models.state import BatteryHistory


def laptop(days: int = 200, seed: int = 0) -> Series:
    """Capacity fades 0.1 %/day from 90 %; runtime = 300 min per unit of capacity, +-13 % per reading."""
    rng = np.random.default_rng(seed)
    day = [float(d) for d in range(days)]
    ratio = [0.9 - 0.001 * d for d in day]
    runtime = [r * 300.0 * rng.uniform(0.87, 1.13) for r in ratio]
    return Series("t", "test", day, ratio, 50_000.0, [int(d) for d in day], runtime)


def last_state(series: Series) -> BatteryHistory:
    states = [state for _, state in _replay(series)]
    state = states[-1]
    assert state.battery is not None
    return state.battery


def test_runtime_threshold_becomes_a_capacity_threshold() -> None:
    battery = last_state(laptop())
    scale = minutes_per_ratio(battery)
    assert scale is not None
    assert abs(scale - 300.0) < 15.0
    estimate = runtime_crossing(battery)
    assert estimate is not None
    # ratio now 0.701; 180 min at 300 min/ratio = 0.6 -> about 101 days
    assert abs(estimate.days - 101.0) < 15.0


def test_capacity_scaled_estimate_is_steadier_than_a_runtime_trend() -> None:
    errors_scaled, errors_trend = [], []
    for seed in range(5):
        battery = last_state(laptop(seed=seed))
        scaled = runtime_crossing(battery, MIN_RUNTIME_MINUTES)
        trend = battery_crossing(battery, MIN_RUNTIME_MINUTES, column="runtime_full_minutes")
        assert scaled is not None
        assert trend is not None
        errors_scaled.append(abs(scaled.days - 101.0))
        errors_trend.append(abs(trend.days - 101.0))
    assert np.mean(errors_scaled) < np.mean(errors_trend)


def test_no_estimate_without_runtime_readings() -> None:
    series = laptop()
    series.runtime = None
    assert runtime_crossing(last_state(series)) is None

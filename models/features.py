"""Pure feature functions over :class:`~fleetpulse.models.state.DeviceState` histories.

Serving (the stream processor's scorers) and training (Backblaze rows replayed as
``DiskHealth`` snapshots through :func:`~fleetpulse.models.state.apply_report`)
both call these functions, so the model sees identical features in both places.
Unknown values are ``nan`` (tree models handle missing values natively), never 0:
"the drive does not report SMART 187" is not "SMART 187 is zero".

Windows are relative to the history's newest day (event time), not to the wall clock.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fleetpulse.models.state import THERMAL_EXCURSION_C, BatteryHistory, DailySeries, DeviceState, DiskHistory

NAN = float("nan")
WINDOWS = (1, 7, 30)

# feature name -> state column, for the counters whose growth predicts failure
GROWTH_COUNTERS: dict[str, str] = {
    "smart_5": "reallocated_sectors",
    "smart_187": "reported_uncorrect",
    "smart_188": "command_timeout",
    "smart_197": "current_pending_sectors",
    "smart_198": "offline_uncorrectable",
    "smart_199": "udma_crc_errors",
    "media_errors": "media_errors",
}
BACKBLAZE_COUNTERS = ("smart_5", "smart_187", "smart_188", "smart_197", "smart_198")
"""Backblaze's published failure rule: any of these raw counts above zero."""
CURRENT_DISK: dict[str, str] = {
    **GROWTH_COUNTERS,
    "critical_warning": "critical_warning",
    "available_spare_pct": "available_spare_pct",
    "percentage_used": "percentage_used",
    "power_on_hours": "power_on_hours",
    "temperature_c": "temperature_c",
    "smart_failed": "smart_failed",
}
DISK_FEATURES: tuple[str, ...] = (
    *CURRENT_DISK,
    "spare_margin_pct",
    "history_days",
    *(f"{f}_delta_{w}d" for f in GROWTH_COUNTERS for w in WINDOWS),
    *(f"{f}_slope_30d" for f in GROWTH_COUNTERS),
    *(f"{f}_growth_days_30d" for f in GROWTH_COUNTERS),
)
BATTERY_FEATURES: tuple[str, ...] = (
    "health_ratio",
    "health_ratio_last",
    "fade_per_day",
    "fade_per_100_cycles",
    "cycle_count",
    "runtime_full_minutes",
    "history_days",
)
DEVICE_FEATURES: tuple[str, ...] = (
    "crashes_1d",
    "crashes_7d",
    "crashes_30d",
    "unexpected_shutdowns_7d",
    "unexpected_shutdowns_30d",
    "thermal_excursions_7d",
    "thermal_excursions_30d",
    "cpu_max_c_7d",
    "boot_duration_s_7d",
    "boot_duration_trend_s_per_day",
    "boot_duration_trend_se",
    "mem_uncorrectable",
    "mem_correctable_delta_7d",
    "active_days_7d",
    "active_days_30d",
)
THERMAL_FEATURES: tuple[str, ...] = (
    "cpu_max_c_recent",
    "cpu_max_c_baseline",
    "cpu_max_c_rise",
    "hot_days_7d",
    "throttle_increase_7d",
    "fan_rpm_recent",
    "fan_rpm_baseline",
    "fan_rpm_ratio",
)
MEMORY_FEATURES: tuple[str, ...] = (
    "mem_uncorrectable",
    "mem_uncorrectable_increase_7d",
    "mem_correctable",
    "mem_correctable_increase_7d",
    "mem_correctable_max_day_7d",
    "mem_correctable_growth_days_7d",
)
RECENT_DAYS = 7
"""The "now" of a device's thermal behaviour: a week, so one heavy-load day does not decide."""
BASELINE_GAP_DAYS = 14
"""Baseline days end this long before the newest day: a fan that fades over weeks must not
drag its own baseline along."""
MIN_RECENT_DAYS = 3
MIN_BASELINE_DAYS = 5


def points(series: DailySeries, column: str, *, finite: bool = False) -> list[tuple[int, float]]:
    """(day, value) pairs of the days that have a value in ``column`` (a missing one is NaN); with
    ``finite``, only finite values (the medians of the cooling rule must not be poisoned by a corrupt state)."""
    col = series.columns.get(column)
    if col is None:
        return []
    if finite:
        isfinite = math.isfinite
        return [(d, v) for d, v in zip(series.days, col, strict=True) if isfinite(v)]
    return [(d, v) for d, v in zip(series.days, col, strict=True) if v == v]


def window_delta(pts: Sequence[tuple[int, float]], window: int) -> float:
    """Growth over the last ``window`` days: newest value minus the value ``window`` days
    earlier (or the oldest value when the history is shorter)."""
    if not pts:
        return NAN
    last_day, last = pts[-1]
    base = pts[0][1]
    for day, value in pts:
        if day > last_day - window:
            break
        base = value
    return last - base


def window_slope(pts: Sequence[tuple[int, float]], window: int) -> float:
    """Average growth per day over the observed part of the last ``window`` days."""
    if len(pts) < 2:
        return NAN
    last_day = pts[-1][0]
    inside = [(d, v) for d, v in pts if d >= last_day - window]
    if len(inside) < 2:
        inside = [pts[-2], pts[-1]]
    span = inside[-1][0] - inside[0][0]
    return (inside[-1][1] - inside[0][1]) / span if span > 0 else NAN


def growth_days(pts: Sequence[tuple[int, float]], window: int) -> float:
    """Number of days in the window on which the counter increased."""
    if not pts:
        return NAN
    last_day = pts[-1][0]
    return float(sum(1 for (_, a), (d, b) in itertools.pairwise(pts) if d > last_day - window and b > a))


_COUNTER_KEYS = {
    feature: (tuple(f"{feature}_delta_{w}d" for w in WINDOWS), f"{feature}_slope_30d", f"{feature}_growth_days_30d")
    for feature in GROWTH_COUNTERS
}


def _counter_features(feature: str, pts: Sequence[tuple[int, float]], out: dict[str, float]) -> None:
    """Deltas, 30-day slope and growth days of one counter (one pass; hot in training replays)."""
    deltas, slope, growth = _COUNTER_KEYS[feature]
    if not pts:
        for key in deltas:
            out[key] = NAN
        out[slope] = out[growth] = NAN
        return
    for key, w in zip(deltas, WINDOWS, strict=True):
        out[key] = window_delta(pts, w)
    out[slope] = window_slope(pts, 30)
    out[growth] = growth_days(pts, 30)


def _constant_counter_features(feature: str, value: float, days: int, out: dict[str, float]) -> None:
    """:func:`_counter_features` of a counter with the same value on each of its ``days`` (>= 1) days,
    without the scans: every delta is ``value - value``, the slope that over a positive span (from two
    days on), no day grew. The usual case: a healthy drive's error counters stay at zero."""
    deltas, slope, growth = _COUNTER_KEYS[feature]
    zero = value - value
    for key in deltas:
        out[key] = zero
    out[slope] = zero if days >= 2 else NAN
    out[growth] = 0.0


def _last_value(series: DailySeries, column: str) -> float:
    """The newest value of ``column`` (``points(series, column)[-1][1]``), NaN when it has none."""
    for value in reversed(series.columns.get(column, ())):
        if value == value:
            return value
    return NAN


def disk_features(disk: DiskHistory) -> dict[str, float]:
    series = disk.series
    out: dict[str, float] = {}
    for feature, column in CURRENT_DISK.items():
        if feature not in GROWTH_COUNTERS:
            out[feature] = _last_value(series, column)
            continue
        col = series.columns.get(column)
        if col and col.count(col[0]) == len(col):  # one value on every day (a NaN never equals itself)
            out[feature] = col[-1]
            _constant_counter_features(feature, col[-1], len(col), out)
            continue
        pts = points(series, column)
        out[feature] = pts[-1][1] if pts else NAN
        _counter_features(feature, pts, out)
    spare, threshold = out["available_spare_pct"], _last_value(series, "available_spare_threshold_pct")
    out["spare_margin_pct"] = spare - threshold if not (math.isnan(spare) or math.isnan(threshold)) else NAN
    out["history_days"] = float(series.days[-1] - series.days[0] + 1) if series.days else 0.0
    return out


def disk_vector(disk: DiskHistory) -> list[float]:
    feats = disk_features(disk)
    return [feats[name] for name in DISK_FEATURES]


def backblaze_flags(features: np.ndarray) -> npt.NDArray[np.bool_]:
    """(n, 5) which of ``BACKBLAZE_COUNTERS`` are above zero in each row of disk feature vectors
    (a counter the drive does not report counts as zero)."""
    cols = [DISK_FEATURES.index(name) for name in BACKBLAZE_COUNTERS]
    flags: npt.NDArray[np.bool_] = np.nan_to_num(features[:, cols].astype(float), nan=0.0) > 0
    return flags


@functools.lru_cache(maxsize=256)
def _pair_indices(n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """All (i < j) index pairs; cached because every battery history of one length shares them."""
    i, j = np.triu_indices(n, k=1)
    i.setflags(write=False)
    j.setflags(write=False)
    return i, j


def pairwise_slopes(
    x: Sequence[float] | npt.NDArray[np.float64], y: Sequence[float] | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The slope between every two points with different x: the same set whatever order the points
    come in (as ``scipy.stats.theilslopes`` takes them), so the fits below do not depend on it."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = _pair_indices(len(xs))
    dx = xs[j] - xs[i]
    ok = dx != 0
    return np.asarray((ys[j][ok] - ys[i][ok]) / dx[ok], dtype=float)


def level_at_latest(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], slope: float) -> float:
    """The robust level of a line with ``slope`` at the largest x (the latest reading)."""
    return float(np.median(y - slope * (x - x.max())))


def theil_sen(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Robust line fit: (slope, level at the largest x). Median of pairwise slopes, so a few
    noisy capacity readings (calibration jumps, lab regeneration) do not swing the trend."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 2:
        return NAN, float(ys[-1]) if len(ys) else NAN
    slopes = pairwise_slopes(xs, ys)
    if not len(slopes):
        return NAN, float(np.median(ys))
    slope = float(np.median(slopes))
    return slope, level_at_latest(xs, ys, slope)


def slope_standard_error(x: Sequence[float], y: Sequence[float], slope: float, level: float) -> float:
    """How far a fitted slope may stray by noise alone: robust residual scatter (1.4826 x MAD)
    over the spread of x, the ordinary least-squares formula with a robust scatter. Boot
    times scatter by a minute on a spinning disk, so a month of them "trends" by a second a
    day without anything changing; only a slope well outside this is a trend."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 3 or math.isnan(slope):
        return NAN
    residuals = ys - (level + slope * (xs - xs.max()))
    scatter = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    spread = float(np.sum((xs - xs.mean()) ** 2))
    return scatter / math.sqrt(spread) if spread > 0 else NAN


def battery_features(battery: BatteryHistory, fit_days: int = 120) -> dict[str, float]:
    series = battery.series
    ratio = points(series, "health_ratio")
    out = dict.fromkeys(BATTERY_FEATURES, NAN)
    if not ratio:
        return out
    last_day = ratio[-1][0]
    recent = [(d, v) for d, v in ratio if d > last_day - fit_days]
    slope, level = theil_sen([d for d, _ in recent], [v for _, v in recent])
    out["health_ratio"] = level
    out["health_ratio_last"] = ratio[-1][1]
    out["fade_per_day"] = -slope if not math.isnan(slope) else NAN
    cycles = points(series, "cycle_count")
    if len(cycles) >= 2 and cycles[-1][1] > cycles[0][1]:
        by_day = dict(ratio)
        paired = [(c, by_day[d]) for d, c in cycles if d in by_day and d > last_day - fit_days]
        if len(paired) >= 2:
            cyc_slope, _ = theil_sen([c for c, _ in paired], [v for _, v in paired])
            out["fade_per_100_cycles"] = -100.0 * cyc_slope if not math.isnan(cyc_slope) else NAN
    out["cycle_count"] = cycles[-1][1] if cycles else NAN
    runtime = points(series, "runtime_full_minutes")
    out["runtime_full_minutes"] = runtime[-1][1] if runtime else NAN
    out["history_days"] = float(last_day - ratio[0][0] + 1)
    return out


def _window_sum(pts: Sequence[tuple[int, float]], last_day: int, window: int) -> float:
    return float(sum(v for d, v in pts if d > last_day - window))


def device_features(state: DeviceState) -> dict[str, float]:
    series = state.device
    out = dict.fromkeys(DEVICE_FEATURES, NAN)
    if not series.days:
        return out
    last_day = series.days[-1]
    crashes = points(series, "crashes")
    shutdowns = points(series, "unexpected_shutdowns")
    thermal = points(series, "thermal_excursions")
    out["crashes_1d"] = _window_sum(crashes, last_day, 1)
    out["crashes_7d"] = _window_sum(crashes, last_day, 7)
    out["crashes_30d"] = _window_sum(crashes, last_day, 30)
    out["unexpected_shutdowns_7d"] = _window_sum(shutdowns, last_day, 7)
    out["unexpected_shutdowns_30d"] = _window_sum(shutdowns, last_day, 30)
    if thermal:
        out["thermal_excursions_7d"] = _window_sum(thermal, last_day, 7)
        out["thermal_excursions_30d"] = _window_sum(thermal, last_day, 30)
    cpu = [v for d, v in points(series, "cpu_max_c") if d > last_day - 7]
    out["cpu_max_c_7d"] = max(cpu) if cpu else NAN
    boot = [(d, v) for d, v in points(series, "boot_duration_s") if d > last_day - 30]
    recent_boot = [v for d, v in boot if d > last_day - 7]
    out["boot_duration_s_7d"] = float(statistics.median(recent_boot)) if recent_boot else NAN  # as numpy's, bit for bit
    if len(boot) >= 3:
        days, seconds = [d for d, _ in boot], [v for _, v in boot]
        slope, level = theil_sen(days, seconds)
        out["boot_duration_trend_s_per_day"] = slope
        out["boot_duration_trend_se"] = slope_standard_error(days, seconds, slope, level)
    mem_u = points(series, "mem_uncorrectable")
    out["mem_uncorrectable"] = mem_u[-1][1] if mem_u else NAN
    mem_c = points(series, "mem_correctable")
    out["mem_correctable_delta_7d"] = window_delta(mem_c, 7) if mem_c else NAN
    out["active_days_7d"] = float(sum(1 for d in series.days if d > last_day - 7))
    out["active_days_30d"] = float(sum(1 for d in series.days if d > last_day - 30))
    return out


def counter_increase(pts: Sequence[tuple[int, float]], window: int) -> float:
    """Growth of a cumulative counter over the last ``window`` days, robust to resets.

    EDAC and CPU throttle counters restart at zero on reboot, WHEA counts shrink when the
    event log rotates: a drop starts a new baseline instead of counting as growth (unlike
    :func:`window_delta`, which would go negative, or Prometheus' ``increase``, which would
    count the whole value after a drop and so invent growth on log rotation).
    """
    if not pts:
        return NAN
    last_day = pts[-1][0]
    return float(sum(b - a for (_, a), (d, b) in itertools.pairwise(pts) if d > last_day - window and b > a))


def max_daily_increase(pts: Sequence[tuple[int, float]], window: int) -> float:
    """Largest growth of a cumulative counter from one daily bucket to the next in the window."""
    if not pts:
        return NAN
    last_day = pts[-1][0]
    return float(max((b - a for (_, a), (d, b) in itertools.pairwise(pts) if d > last_day - window), default=0.0))


def recent_and_baseline(pts: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Median of the last ``RECENT_DAYS`` days and of the days ``BASELINE_GAP_DAYS`` or more
    before the newest day (``nan`` when fewer than ``MIN_RECENT_DAYS``/``MIN_BASELINE_DAYS``).

    Medians of daily maxima: a device's hottest reading depends on the day's workload,
    the median of a week of them on its cooling.
    """
    if not pts:
        return NAN, NAN
    last_day = pts[-1][0]
    recent = [v for d, v in pts if d > last_day - RECENT_DAYS]
    baseline = [v for d, v in pts if d <= last_day - BASELINE_GAP_DAYS]
    return (  # statistics.median: numpy's costs ~20x more on a few dozen values
        float(statistics.median(recent)) if len(recent) >= MIN_RECENT_DAYS else NAN,
        float(statistics.median(baseline)) if len(baseline) >= MIN_BASELINE_DAYS else NAN,
    )


def thermal_features(state: DeviceState) -> dict[str, float]:
    """Cooling health from the daily device series; all ``nan`` when the device reports no thermals."""
    series = state.device
    out = dict.fromkeys(THERMAL_FEATURES, NAN)
    cpu = points(series, "cpu_max_c", finite=True)
    throttle = points(series, "throttle_events", finite=True)
    fans = points(series, "fan_rpm_max", finite=True)
    if not (cpu or throttle or fans):
        return out
    last_day = series.days[-1]
    if cpu:
        recent, baseline = recent_and_baseline(cpu)
        out["cpu_max_c_recent"], out["cpu_max_c_baseline"] = recent, baseline
        out["cpu_max_c_rise"] = recent - baseline
        out["hot_days_7d"] = float(sum(1 for d, v in cpu if d > last_day - RECENT_DAYS and v >= THERMAL_EXCURSION_C))
    if throttle:
        out["throttle_increase_7d"] = counter_increase(throttle, RECENT_DAYS)
    if fans:
        recent, baseline = recent_and_baseline(fans)
        out["fan_rpm_recent"], out["fan_rpm_baseline"] = recent, baseline
        out["fan_rpm_ratio"] = recent / baseline if baseline > 0 else NAN
    return out


def memory_features(state: DeviceState) -> dict[str, float]:
    """Memory error counters from the daily device series; all ``nan`` when none are reported."""
    series = state.device
    out = dict.fromkeys(MEMORY_FEATURES, NAN)
    ue = points(series, "mem_uncorrectable", finite=True)
    ce = points(series, "mem_correctable", finite=True)
    if not (ue or ce):
        return out
    if ue:
        out["mem_uncorrectable"] = ue[-1][1]
        out["mem_uncorrectable_increase_7d"] = counter_increase(ue, RECENT_DAYS)
    if ce:
        out["mem_correctable"] = ce[-1][1]
        out["mem_correctable_increase_7d"] = counter_increase(ce, RECENT_DAYS)
        out["mem_correctable_max_day_7d"] = max_daily_increase(ce, RECENT_DAYS)
        out["mem_correctable_growth_days_7d"] = growth_days(ce, RECENT_DAYS)
    return out

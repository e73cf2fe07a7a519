"""Battery end-of-life: days until the capacity ratio (or runtime) crosses a threshold.

A robust trend (Theil-Sen) over the recent capacity history, extrapolated
linearly; predictions are capped at ten years (``MAX_DAYS``). The interval around the
estimate is calibrated on how wrong such estimates were on real histories
(:mod:`~fleetpulse.models.battery_interval`): the error is the bias of a straight line
through a curved fade, which no spread of the fitted slopes shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleetpulse.models.battery_interval import interval
from fleetpulse.models.features import level_at_latest, pairwise_slopes, points, slope_standard_error
from fleetpulse.models.state import BatteryHistory

MAX_DAYS = 3_650.0
SERVICE_RATIO = 0.8
WORN_OUT_RATIO = 0.6
MIN_RUNTIME_MINUTES = 180.0
# Fit windows, chosen on the real histories in ../shared/data/battery (see battery_eval).
SHORT_DAYS = 60.0
LONG_DAYS = 240.0
MIN_PROJECTION_SPAN_DAYS = 30.0
"""Days of readings before a fade is projected for alerting: a month of daily readings pins
a fade of a few points a year; a week does not (simulated fleet: tickets filed in the
first week for batteries that reach 60 % months after the window)."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """Days from the newest reading until the threshold is crossed (0 if already below), with
    the calibrated interval ``low``..``high`` (nominal ``battery_interval.NOMINAL_COVERAGE``)."""

    days: float
    low: float
    high: float
    level: float
    slope_per_day: float


def days_to_threshold(level: float, threshold: float, slope: float) -> float:
    if slope >= 0.0:
        return MAX_DAYS
    return float(min(MAX_DAYS, (level - threshold) / -slope))


@dataclass(frozen=True, slots=True)
class Trend:
    """A robust fade trend, fitted once and extrapolated to any number of thresholds.

    ``steep`` and ``shallow`` are the inter-quartile pairwise slopes of the short window:
    the interval served before the calibrated one, kept as the evaluation's baseline.
    """

    level: float
    slope: float
    steep: float
    shallow: float
    long_slope: float
    slope_se: float
    span_days: float

    @property
    def fading(self) -> bool:
        """A fade worth projecting: readings over ``MIN_PROJECTION_SPAN_DAYS`` and a slope below
        zero by two standard errors.

        A handful of readings a few days apart "fade" by whole percentage points a day on
        calibration noise alone (and their scatter is too few to estimate that noise);
        projecting that to 60 % files a ticket for a battery that wears out years later.
        """
        return self.span_days >= MIN_PROJECTION_SPAN_DAYS and self.slope + 2.0 * self.slope_se < 0.0

    def crossing(self, threshold: float) -> Crossing:
        days = 0.0 if self.level <= threshold else days_to_threshold(self.level, threshold, self.slope)
        low, high = interval(days)
        return Crossing(days, min(low, MAX_DAYS), min(high, MAX_DAYS), self.level, self.slope)


def fit_trend(
    days: Sequence[float], values: Sequence[float], short_days: float = SHORT_DAYS, long_days: float = LONG_DAYS
) -> Trend | None:
    """Level and slope from the last ``short_days``; ``None`` with fewer than 3 recent readings.

    The slope is the steeper of the short and the ``long_days`` slope, because fade
    accelerates with age (the "knee") while a short flat stretch (lab cells recover
    after rests) must not read as "never".
    """
    xs, ys = np.asarray(days, dtype=float), np.asarray(values, dtype=float)
    if len(xs) == 0:
        return None
    recent = xs > xs[-1] - short_days
    xs_short, ys_short = xs[recent], ys[recent]
    if len(xs_short) < 3 or xs_short[-1] - xs_short[0] <= 0:
        return None
    short_slopes = pairwise_slopes(xs_short, ys_short)
    longer = xs > xs[-1] - long_days
    long_slope = float(np.median(pairwise_slopes(xs[longer], ys[longer])))
    short_slope = float(np.median(short_slopes))
    level = level_at_latest(xs_short, ys_short, short_slope)
    steep, shallow = (float(q) for q in np.quantile(short_slopes, [0.25, 0.75]))
    slope_se = slope_standard_error(xs_short, ys_short, short_slope, level)
    return Trend(
        level=level,
        slope=min(short_slope, long_slope),
        steep=steep,
        shallow=shallow,
        long_slope=long_slope,
        slope_se=slope_se if np.isfinite(slope_se) else float("inf"),
        span_days=float(xs_short[-1] - xs_short[0]),
    )


def battery_trend(battery: BatteryHistory, column: str = "health_ratio") -> Trend | None:
    pts = points(battery.series, column)
    return fit_trend([d for d, _ in pts], [v for _, v in pts])


def minutes_per_ratio(battery: BatteryHistory, window_days: float = LONG_DAYS) -> float | None:
    """Runtime on a full charge per unit of capacity ratio: the median of runtime / ratio over
    the readings of the last ``window_days`` that carry both (None with fewer than 3)."""
    ratio = dict(points(battery.series, "health_ratio"))
    runtime = points(battery.series, "runtime_full_minutes")
    if not runtime:
        return None
    last = runtime[-1][0]
    per_ratio = [m / ratio[d] for d, m in runtime if d > last - window_days and ratio.get(d, 0.0) > 0.0]
    return float(np.median(per_ratio)) if len(per_ratio) >= 3 else None


def runtime_crossing(
    battery: BatteryHistory, minutes: float = MIN_RUNTIME_MINUTES, trend: Trend | None = None
) -> Crossing | None:
    """Days until runtime on a full charge drops under ``minutes``, via the capacity trend.

    At a given power draw, runtime is proportional to the charge the battery holds, so the
    runtime threshold is a capacity threshold: ``minutes / minutes_per_ratio``. Runtime
    readings scatter with what the user ran that day; capacity readings barely do. A trend
    fitted to runtime itself inherits that scatter (its slope swings by years); the
    median of runtime / capacity over months is stable, and the capacity trend is the
    one already validated against real histories. A workload change shifts the median
    within ``LONG_DAYS``. A caller that has fitted the capacity trend already passes it as ``trend``.
    """
    scale = minutes_per_ratio(battery)
    trend = trend or battery_trend(battery)
    if scale is None or trend is None or scale <= 0.0:
        return None
    return trend.crossing(minutes / scale)

"""Battery end-of-life: days until the capacity ratio (or runtime) crosses a threshold.

A robust trend (Theil-Sen) over the recent capacity history, extrapolated
linearly; predictions are capped at ten years (``MAX_DAYS``). The interval comes from the spread (inter-quartile) of the pairwise
slopes, so a noisy history yields an honest wide interval instead of false precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleetpulse.models.features import points
from fleetpulse.models.state import BatteryHistory

MAX_DAYS = 3_650.0
SERVICE_RATIO = 0.8
WORN_OUT_RATIO = 0.6
MIN_RUNTIME_MINUTES = 180.0
# Fit windows, chosen on the real histories in ../shared/data/battery (see battery_eval).
SHORT_DAYS = 60.0
LONG_DAYS = 240.0


@dataclass(frozen=True, slots=True)
class Crossing:
    """Days from the newest reading until the threshold is crossed (0 if already below)."""

    days: float
    low: float
    high: float
    level: float
    slope_per_day: float


def _days(level: float, threshold: float, slope: float) -> float:
    if slope >= 0.0:
        return MAX_DAYS
    return float(min(MAX_DAYS, (level - threshold) / -slope))


def _pairwise_slopes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(xs), k=1)
    dx = xs[j] - xs[i]
    ok = dx > 0
    return np.asarray((ys[j][ok] - ys[i][ok]) / dx[ok])


def crossing(
    days: Sequence[float],
    values: Sequence[float],
    threshold: float,
    short_days: float = SHORT_DAYS,
    long_days: float = LONG_DAYS,
) -> Crossing | None:
    """Extrapolate a fading series to ``threshold``; ``None`` with fewer than 3 recent readings.

    Level and slope come from the last ``short_days``; the slope is the steeper of that
    and the ``long_days`` slope, because fade accelerates with age (the "knee") while a
    short flat stretch (lab cells recover after rests) must not read as "never".
    """
    xs, ys = np.asarray(days, dtype=float), np.asarray(values, dtype=float)
    if len(xs) == 0:
        return None
    recent = xs > xs[-1] - short_days
    xs_short, ys_short = xs[recent], ys[recent]
    if len(xs_short) < 3 or xs_short[-1] - xs_short[0] <= 0:
        return None
    short_slopes = _pairwise_slopes(xs_short, ys_short)
    longer = xs > xs[-1] - long_days
    long_slope = float(np.median(_pairwise_slopes(xs[longer], ys[longer])))
    short_slope = float(np.median(short_slopes))
    slope = min(short_slope, long_slope)
    level = float(np.median(ys_short - short_slope * (xs_short - xs_short[-1])))
    steep, shallow = (float(q) for q in np.quantile(short_slopes, [0.25, 0.75]))
    if level <= threshold:
        return Crossing(0.0, 0.0, 0.0, level, slope)
    return Crossing(
        days=_days(level, threshold, slope),
        low=_days(level, threshold, min(steep, slope)),
        high=_days(level, threshold, max(min(shallow, long_slope), slope)),
        level=level,
        slope_per_day=slope,
    )


def battery_crossing(battery: BatteryHistory, threshold: float, column: str = "health_ratio") -> Crossing | None:
    """Days until ``column`` of the battery history crosses ``threshold``."""
    pts = points(battery.series, column)
    return crossing([d for d, _ in pts], [v for _, v in pts], threshold)

"""Battery end-of-life: days until the capacity ratio (or runtime) crosses a threshold.

A robust trend (Theil-Sen) over the recent capacity history, extrapolated
linearly. The interval comes from the spread (inter-quartile) of the pairwise
slopes, so a noisy history yields an honest wide interval instead of false precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleetpulse.models.features import points
from fleetpulse.models.state import BatteryHistory

MAX_DAYS = 36_500.0
SERVICE_RATIO = 0.8
WORN_OUT_RATIO = 0.6
MIN_RUNTIME_MINUTES = 180.0


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


def crossing(days: Sequence[float], values: Sequence[float], threshold: float) -> Crossing | None:
    """Extrapolate a fading series to ``threshold``; ``None`` with fewer than 3 readings."""
    xs, ys = np.asarray(days, dtype=float), np.asarray(values, dtype=float)
    if len(xs) < 3 or xs[-1] - xs[0] <= 0:
        return None
    i, j = np.triu_indices(len(xs), k=1)
    dx = xs[j] - xs[i]
    ok = dx > 0
    slopes = (ys[j][ok] - ys[i][ok]) / dx[ok]
    slope = float(np.median(slopes))
    steep, shallow = (float(q) for q in np.quantile(slopes, [0.25, 0.75]))
    level = float(np.median(ys - slope * (xs - xs[-1])))
    if level <= threshold:
        return Crossing(0.0, 0.0, 0.0, level, slope)
    return Crossing(
        days=_days(level, threshold, slope),
        low=_days(level, threshold, min(steep, slope)),
        high=_days(level, threshold, max(shallow, slope)),
        level=level,
        slope_per_day=slope,
    )


def battery_crossing(
    battery: BatteryHistory, threshold: float, column: str = "health_ratio", fit_days: int = 120
) -> Crossing | None:
    """Days until ``column`` of the battery history crosses ``threshold``, fitted on ``fit_days``."""
    pts = points(battery.series, column)
    if not pts:
        return None
    last = pts[-1][0]
    recent = [(d, v) for d, v in pts if d > last - fit_days]
    return crossing([d for d, _ in recent], [v for _, v in recent], threshold)

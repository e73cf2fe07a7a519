"""Calibrated interval around the battery days-to-threshold estimate.

The estimate's error is model bias, not noise: Li-ion fade accelerates at a knee, and
lab cells regain capacity after rests, so a flat stretch predicts years just before the
knee and a steep one predicts days just before a recovery. The spread of the fitted
slopes (the interval served before) measures noise and held the truth 13-31 % of the
time on the real histories. This interval is split-conformal on the *relative* error
instead: over the replayed real histories, the distribution of
``log((true + 1) / (predicted + 1))`` days, separately per bin of the predicted days
(the error differs: predictions of years are mostly too long, of weeks either way).
Its lower and upper ``(1 - NOMINAL_COVERAGE) / 2`` quantiles become multiplicative
factors. A relative error carries over from lab cells (one cycle = one day) to laptops
(calendar days) where an error in days would not; the one day offset gives "already
below" (0 days predicted) an upper bound too. The bins, though, are in days and so carry
the lab cells' one-cycle-a-day assumption: a laptop cycling less often lands in a longer
bin than a lab cell at the same stage of wear.

Each battery weighs the same within a bin (its readings are one history, not independent
draws): four CALCE cells with ~900 cycles each would otherwise set every factor.

``NOMINAL_COVERAGE`` is 80 %, not 95 %: nine real histories (eight in each
leave-one-series-out fold) cannot place a 2.5 % tail (less than a quarter of one
battery's weight), and a ticket reader gets a usable range from a 4-in-5 interval.

``FACTORS`` are the served constants, computed from all real histories by
``python -m fleetpulse.models.battery_calibration`` (which prints them);
tests/unit/test_models_battery.py checks they match that computation on the shared data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NOMINAL_COVERAGE = 0.8
OFFSET_DAYS = 1.0
BIN_EDGES = (0.0, 30.0, 90.0, 365.0, math.inf)
"""Upper edges of the predicted-days bins: already below, a month, a quarter, a year, longer."""


@dataclass(frozen=True, slots=True)
class BinFactors:
    """Multiplicative factors on ``predicted + OFFSET_DAYS`` for predictions up to ``up_to_days``."""

    up_to_days: float
    low: float
    high: float
    series: int
    """Batteries with predictions in the bin (0: no calibration data, the interval is 0..MAX)."""


FACTORS = (
    BinFactors(0.0, 3.0, 13.0, 2),
    BinFactors(30.0, 0.214, 2.953, 8),
    BinFactors(90.0, 0.277, 2.248, 9),
    BinFactors(365.0, 0.228, 2.463, 8),
    BinFactors(math.inf, 0.146, 1.091, 6),
)


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """One replayed prediction with a known outcome: days predicted and days it really took."""

    series: str
    predicted_days: float
    true_days: float


def bin_index(predicted_days: float) -> int:
    return next(i for i, edge in enumerate(BIN_EDGES) if predicted_days <= edge)


def interval(predicted_days: float, factors: Sequence[BinFactors] = FACTORS) -> tuple[float, float]:
    """Low and high days around ``predicted_days``; always contains the prediction itself
    (a calibrated bias could otherwise put the point estimate outside its own range)."""
    fit = next(f for f in factors if predicted_days <= f.up_to_days)
    if fit.series == 0:
        return 0.0, math.inf
    base = predicted_days + OFFSET_DAYS
    low = max(0.0, min(predicted_days, base * fit.low - OFFSET_DAYS))
    high = max(predicted_days, base * fit.high - OFFSET_DAYS)
    return low, high


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles of the weighted empirical distribution (the smallest value whose cumulative
    weight reaches q), so a factor is always an observed error."""
    order = np.argsort(values)
    ranked = values[order]
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return [float(ranked[min(int(np.searchsorted(cumulative, q)), len(ranked) - 1)]) for q in qs]


def fit_factors(records: Sequence[CalibrationRecord], coverage: float = NOMINAL_COVERAGE) -> tuple[BinFactors, ...]:
    """Per predicted-days bin, the equal-tailed ``coverage`` quantiles of the relative error,
    each series weighted equally within the bin."""
    tail = (1.0 - coverage) / 2.0
    out = []
    for i, edge in enumerate(BIN_EDGES):
        in_bin = [r for r in records if bin_index(r.predicted_days) == i]
        if not in_bin:
            out.append(BinFactors(edge, 0.0, math.inf, 0))
            continue
        per_series: dict[str, int] = {}
        for r in in_bin:
            per_series[r.series] = per_series.get(r.series, 0) + 1
        ratios = np.array([(r.true_days + OFFSET_DAYS) / (r.predicted_days + OFFSET_DAYS) for r in in_bin])
        weights = np.array([1.0 / per_series[r.series] for r in in_bin])
        low, high = _weighted_quantiles(np.log(ratios), weights, (tail, 1.0 - tail))
        out.append(BinFactors(edge, round(math.exp(low), 3), round(math.exp(high), 3), len(per_series)))
    return tuple(out)


def leave_group_out(
    records: Sequence[CalibrationRecord], group: Callable[[str], str] = lambda series: series
) -> list[tuple[CalibrationRecord, float, float]]:
    """Every record with the interval from factors fitted on the records of the *other*
    groups only; by default each series is its own group (leave-one-series-out)."""
    out = []
    for held in sorted({group(r.series) for r in records}):
        factors = fit_factors([r for r in records if group(r.series) != held])
        out += [(r, *interval(r.predicted_days, factors)) for r in records if group(r.series) == held]
    return out

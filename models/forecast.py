"""Parts forecast: how many disks, batteries, fans and memory modules the fleet will need.

Pure functions from the latest score of every device component to the expected number
of replacements per component, hardware model and site in the next ``window`` days,
with a prediction interval and the CO2e avoided by repairing instead of replacing.

Per part, the probability of a replacement within the window:

* a served probability (the disk model's calibrated risk, or a rule's alert level)
  over its own horizon is converted to the window at a constant hazard:
  ``1 - (1 - risk) ** (window / horizon)``;
* the disk risk first has its odds multiplied by ``disk_odds_factor``: the model is
  calibrated on the survival table's instants, which sit where SMART counters change
  (5.8 % of them precede a failure within 30 days), while a forecast scores every drive
  every day (0.41 % a month fail); the factor is that change of base rate, measured on the
  training drives before the model's cut-off (:func:`~fleetpulse.models.forecast_backtest.disk_odds_factor`);
* a rule component scored "clear" (``RISK_CLEAR``, a level rather than a probability), and
  a battery without an end-of-life estimate (its levels mean "service due", not "worn
  out soon"), get the component's configured annual failure rate instead, converted the
  same way;
* a battery with an end-of-life estimate (days until 60 % of design capacity) gets the
  probability that the true crossing falls in the window, from the calibrated interval
  of :mod:`~fleetpulse.models.battery_interval` read as a log-normal distribution of
  ``days + 1`` whose ``(1 - NOMINAL_COVERAGE) / 2`` and ``(1 + NOMINAL_COVERAGE) / 2``
  quantiles are the interval's ends; a battery already below 60 % is due now (1).

Each group's probabilities are then corrected by what the fleet's past windows say about
its component and hardware model (a rate factor, shrunk toward the pooled one), and the
interval is that of a Poisson-binomial count mixed over the factor's uncertainty and the
window-to-window spread; without any history both come from the Backblaze-measured prior
(:mod:`~fleetpulse.models.forecast_calibration`, which also says why). The Poisson-binomial
itself is computed *exactly* (dynamic programming over the parts, truncated where the
remaining mass is below 1e-12): the same table comes out on every run and a group of
100,000 parts costs milliseconds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import binom

from fleetpulse.contract import Component, DeviceKind
from fleetpulse.models.battery import MAX_DAYS
from fleetpulse.models.battery_interval import FACTORS, OFFSET_DAYS
from fleetpulse.models.battery_interval import NOMINAL_COVERAGE as BATTERY_INTERVAL_COVERAGE
from fleetpulse.models.forecast_rows import WINDOWS, Calibration, ForecastRow, PartRisk, calibration_stratum
from fleetpulse.models.forecast_settings import ForecastSettings, part_key
from fleetpulse.models.rules import RISK_CLEAR

_TRUNCATE = 1e-12
_MOBILE = frozenset({DeviceKind.PHONE, DeviceKind.TABLET})


def hazard_converted(risk: float, horizon_days: float, window_days: float) -> float:
    """Probability within ``window_days`` of an event with probability ``risk`` within ``horizon_days``,
    at a constant hazard."""
    if risk >= 1.0:
        return 1.0
    if risk <= 0.0:
        return 0.0
    return float(1.0 - (1.0 - risk) ** (window_days / horizon_days))


def shift_odds(risk: float, factor: float) -> float:
    """``risk`` with its odds multiplied by ``factor`` (a change of base rate, the prior correction)."""
    if risk >= 1.0 or risk <= 0.0 or factor == 1.0:
        return risk
    odds = factor * risk / (1.0 - risk)
    return odds / (1.0 + odds)


_BATTERY_Z = float(ndtri((1.0 + BATTERY_INTERVAL_COVERAGE) / 2.0))


def _battery_intervals(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~fleetpulse.models.battery_interval.interval` for many estimates at once."""
    factors = FACTORS
    edges = np.array([f.up_to_days for f in factors])
    fit = np.minimum(np.searchsorted(edges, days, side="left"), len(factors) - 1)
    low_f = np.array([f.low for f in factors])[fit]
    high_f = np.array([f.high for f in factors])[fit]
    base = days + OFFSET_DAYS
    low = np.maximum(0.0, np.minimum(days, base * low_f - OFFSET_DAYS))
    high = np.maximum(days, base * high_f - OFFSET_DAYS)
    uncalibrated = np.array([f.series == 0 for f in factors])[fit]
    return np.where(uncalibrated, 0.0, low), np.where(uncalibrated, np.inf, high)


def crossing_probabilities(days: np.ndarray, window_days: float) -> np.ndarray:
    """Probability that batteries predicted to reach 60 % in ``days`` do so within ``window_days``.

    The calibrated interval around each estimate holds the true crossing with probability
    ``BATTERY_INTERVAL_COVERAGE``; read as a log-normal of ``true + 1`` with those quantiles
    (an open upper end is taken as ``MAX_DAYS``).
    """
    days = np.asarray(days, dtype=float)
    low, high = _battery_intervals(days)
    high = np.where(np.isfinite(high), np.minimum(high, MAX_DAYS), MAX_DAYS)
    high = np.maximum(high, days)
    log_low, log_high = np.log(low + 1.0), np.log(high + 1.0)
    width = log_high - log_low
    mu = (log_low + log_high) / 2.0
    sigma = np.where(width > 0.0, width, 1.0) / (2.0 * _BATTERY_Z)
    z = (math.log(window_days + 1.0) - mu) / sigma
    p = ndtr(z)
    p = np.where(width > 0.0, p, (days <= window_days).astype(float))
    return np.where(days <= 0.0, 1.0, p)


def crossing_probability(days: float, window_days: float) -> float:
    return float(crossing_probabilities(np.array([days]), window_days)[0])


def window_probabilities(parts: Sequence[PartRisk], window_days: int, settings: ForecastSettings) -> np.ndarray:
    """Each part's probability of needing a replacement within ``window_days`` (rules in the module doc)."""
    codes = {c: i for i, c in enumerate(Component)}
    component = np.array([codes[p.component] for p in parts], dtype=np.int8)
    risk = np.array([p.risk for p in parts], dtype=float)
    horizon = np.array([p.horizon_days for p in parts], dtype=float)
    days = np.array([np.nan if p.replace_in_days is None else p.replace_in_days for p in parts], dtype=float)
    disk = component == codes[Component.DISK]
    battery = component == codes[Component.BATTERY]
    odds = settings.disk_odds_factor * risk / np.maximum(1.0 - risk, 1e-300)
    shifted = np.where(disk & (risk > 0.0) & (risk < 1.0), odds / (1.0 + odds), risk)
    out = 1.0 - np.power(np.clip(1.0 - shifted, 0.0, 1.0), window_days / horizon)
    # a battery's levels without an end-of-life estimate say "service due", not "worn out soon"
    no_evidence = battery | (~disk & (risk <= RISK_CLEAR))
    for part, rate in settings.annual_failure_rate.items():
        out = np.where(no_evidence & (component == codes[part]), hazard_converted(rate, 365.0, window_days), out)
    estimated = battery & ~np.isnan(days)
    if estimated.any():
        out[estimated] = crossing_probabilities(days[estimated], window_days)
    return out


def window_probability(part: PartRisk, window_days: int, settings: ForecastSettings) -> float:
    return float(window_probabilities([part], window_days, settings)[0])


def poisson_binomial(probabilities: Sequence[float] | np.ndarray) -> np.ndarray:
    """Exact distribution of the number of successes of independent Bernoulli trials.

    ``pmf[k]`` = P(k successes), truncated after the last ``k`` carrying more than 1e-12 of
    mass (beyond the mean by many standard deviations). Parts with the same probability
    (a rule level, the model's floor) enter as one binomial, the others one step each.
    """
    ps = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    mean, var = float(ps.sum()), float((ps * (1.0 - ps)).sum())
    support = min(len(ps), math.ceil(mean + 12.0 * math.sqrt(var) + 12.0)) + 1
    pmf = np.zeros(support)
    pmf[0] = 1.0
    certain = int((ps >= 1.0).sum())
    values, counts = np.unique(ps[(ps > 0.0) & (ps < 1.0)], return_counts=True)
    for p in values[counts == 1].tolist():
        pmf[1:] = pmf[1:] * (1.0 - p) + pmf[:-1] * p
        pmf[0] *= 1.0 - p
    for p, n in zip(values[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
        pmf = np.convolve(pmf, binom.pmf(np.arange(min(n, support - 1) + 1), n, p))[:support]
    if certain:
        pmf = np.concatenate([np.zeros(certain), pmf])
    keep = np.nonzero(pmf > _TRUNCATE)[0]
    pmf = pmf[: keep[-1] + 1] if len(keep) else pmf[:1]
    return np.asarray(pmf / pmf.sum())


def count_interval(pmf: np.ndarray, coverage: float) -> tuple[int, int]:
    """Equal-tailed interval ``[low, high]`` of a count distribution: P(X < low) and P(X > high)
    are each at most ``(1 - coverage) / 2``, so the interval holds at least ``coverage``."""
    tail = (1.0 - coverage) / 2.0
    cdf = np.cumsum(pmf)
    low = int(np.searchsorted(cdf, tail, side="right"))
    high = int(np.searchsorted(cdf, 1.0 - tail - 1e-12, side="left"))
    return low, min(high, len(pmf) - 1)


def co2e_avoided_per_repair(part: PartRisk, settings: ForecastSettings) -> float:
    """Device footprint minus part footprint; 0 where the part cannot be swapped or the device is unknown."""
    if part.device_kind is None:
        return 0.0
    part_kg = settings.part_co2e_kg.get(part_key(part.component, part.device_kind in _MOBILE))
    device_kg = settings.device_co2e_kg.get(part.device_kind)
    if part_kg is None or device_kg is None:
        return 0.0
    return max(0.0, device_kg - part_kg)


def forecast(
    parts: Iterable[PartRisk],
    settings: ForecastSettings,
    windows: Sequence[int] = WINDOWS,
    calibration: Calibration | None = None,
) -> list[ForecastRow]:
    """One row per component, hardware model, site and window, most expected replacements first;
    ``calibration``: the fleet's learned factors (None: the prior of ``settings.calibration`` alone)."""
    from fleetpulse.models.forecast_calibration import calibrated_count

    calibration = calibration or Calibration(prior=settings.calibration)
    parts = list(parts)
    groups: dict[tuple[Component, str, str], list[int]] = defaultdict(list)
    for i, part in enumerate(parts):
        groups[(part.component, part.hardware_model, part.site)].append(i)
    strata = np.array([calibration_stratum(p.component, p.replace_in_days) for p in parts], dtype=object)
    savings: dict[tuple[Component, DeviceKind | None], float] = {}
    for part in parts:
        if (part.component, part.device_kind) not in savings:
            savings[(part.component, part.device_kind)] = co2e_avoided_per_repair(part, settings)
    saving = np.array([savings[(p.component, p.device_kind)] for p in parts])
    rows = []
    for window in windows:
        probability = window_probabilities(parts, window, settings) if parts else np.zeros(0)
        for (component, model, site), members in groups.items():
            ps, pmf = calibrated_count(probability[members], strata[members], component, model, calibration)
            low, high = count_interval(pmf, settings.coverage)
            rows.append(
                ForecastRow(
                    component=component,
                    hardware_model=model,
                    site=site,
                    window_days=window,
                    parts=len(members),
                    expected=round(float(ps.sum()), 3),
                    low=low,
                    high=high,
                    coverage=settings.coverage,
                    co2e_avoided_kg=round(float((ps * saving[members]).sum()), 1),
                )
            )
    rows.sort(key=lambda r: (r.window_days, -r.expected, r.component.value, r.hardware_model, r.site))
    return rows

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

The count of replacements in a group is a sum of independent Bernoulli variables with
different probabilities: a Poisson-binomial distribution, computed *exactly* (dynamic
programming over the parts, truncated where the remaining mass is below 1e-12). Exact
rather than simulated: the same table comes out on every run, the tails carry no Monte
Carlo error, and a group of 100,000 parts costs milliseconds. Independence is the
assumption the backtest checks: a batch fault (many drives of one model failing
together) makes real counts more spread out than the interval says.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from fleetpulse.contract import Component, DeviceKind
from fleetpulse.models.battery import MAX_DAYS
from fleetpulse.models.battery_interval import NOMINAL_COVERAGE as BATTERY_INTERVAL_COVERAGE
from fleetpulse.models.battery_interval import interval
from fleetpulse.models.forecast_settings import ForecastSettings, part_key
from fleetpulse.models.rules import RISK_CLEAR

WINDOWS = (30, 90)
PARTS = (Component.DISK, Component.BATTERY, Component.THERMAL, Component.MEMORY)
"""Replaceable parts; the whole-device anomaly score asks for a diagnosis, not a part."""
UNKNOWN = "unknown"
_TRUNCATE = 1e-12
_MOBILE = frozenset({DeviceKind.PHONE, DeviceKind.TABLET})


@dataclass(frozen=True, slots=True)
class PartRisk:
    """The latest score of one device component, with where the part is (site) and what it sits in."""

    component: Component
    site: str
    hardware_model: str
    device_kind: DeviceKind | None
    risk: float
    horizon_days: int
    replace_in_days: float | None = None
    """The part's own estimate of days until it needs replacing (battery: until 60 %), if it makes one."""


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


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF by bisection (used for one constant)."""
    low, high = -10.0, 10.0
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if _normal_cdf(mid) < p else (low, mid)
    return (low + high) / 2.0


_BATTERY_Z = _normal_quantile((1.0 + BATTERY_INTERVAL_COVERAGE) / 2.0)


def crossing_probability(days: float, window_days: float) -> float:
    """Probability that a battery predicted to reach 60 % in ``days`` does so within ``window_days``.

    The calibrated interval around ``days`` holds the true crossing with probability
    ``BATTERY_INTERVAL_COVERAGE``; read as a log-normal of ``true + 1`` with those quantiles.
    """
    if days <= 0.0:
        return 1.0
    low, high = interval(days)
    if not math.isfinite(high) or high >= MAX_DAYS:
        high = max(high if math.isfinite(high) else MAX_DAYS, days)
    log_low, log_high = math.log(low + 1.0), math.log(high + 1.0)
    if log_high <= log_low:
        return 1.0 if days <= window_days else 0.0
    mu = (log_low + log_high) / 2.0
    sigma = (log_high - log_low) / (2.0 * _BATTERY_Z)
    return _normal_cdf((math.log(window_days + 1.0) - mu) / sigma)


def window_probability(part: PartRisk, window_days: int, settings: ForecastSettings) -> float:
    """The part's probability of needing a replacement within ``window_days`` (rules in the module doc)."""
    if part.component is Component.BATTERY and part.replace_in_days is not None:
        return crossing_probability(part.replace_in_days, window_days)
    # a battery's levels without an end-of-life estimate say "service due", not "worn out soon"
    no_evidence = part.component is Component.BATTERY or (
        part.component is not Component.DISK and part.risk <= RISK_CLEAR
    )
    if no_evidence and part.component in settings.annual_failure_rate:
        return hazard_converted(settings.annual_failure_rate[part.component], 365.0, window_days)
    risk = shift_odds(part.risk, settings.disk_odds_factor) if part.component is Component.DISK else part.risk
    return hazard_converted(risk, part.horizon_days, window_days)


def poisson_binomial(probabilities: Sequence[float] | np.ndarray) -> np.ndarray:
    """Exact distribution of the number of successes of independent Bernoulli trials.

    ``pmf[k]`` = P(k successes), truncated after the last ``k`` carrying more than 1e-12 of
    mass (beyond the mean by many standard deviations), so the cost is parts x support.
    """
    ps = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    mean, var = float(ps.sum()), float((ps * (1.0 - ps)).sum())
    support = min(len(ps), math.ceil(mean + 12.0 * math.sqrt(var) + 12.0)) + 1
    pmf = np.zeros(support)
    pmf[0] = 1.0
    certain = int((ps >= 1.0).sum())
    top = 0
    for p in ps[(ps > 0.0) & (ps < 1.0)]:
        top = min(top + 1, support - 1)
        pmf[1 : top + 1] = pmf[1 : top + 1] * (1.0 - p) + pmf[:top] * p
        pmf[0] *= 1.0 - p
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


class ForecastRow(BaseModel):
    """Expected replacements of one component, hardware model and site within ``window_days``."""

    model_config = ConfigDict(frozen=True)

    component: Component
    hardware_model: str
    site: str
    window_days: int
    parts: int
    expected: float
    low: int
    high: int
    coverage: float
    co2e_avoided_kg: float
    """Expected embodied CO2e avoided when these parts are repaired instead of the devices replaced."""


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
    parts: Iterable[PartRisk], settings: ForecastSettings, windows: Sequence[int] = WINDOWS
) -> list[ForecastRow]:
    """One row per component, hardware model, site and window, most expected replacements first."""
    groups: dict[tuple[Component, str, str], list[PartRisk]] = defaultdict(list)
    for part in parts:
        groups[(part.component, part.hardware_model, part.site)].append(part)
    rows = []
    for (component, model, site), members in groups.items():
        saving = np.array([co2e_avoided_per_repair(p, settings) for p in members])
        for window in windows:
            ps = np.array([window_probability(p, window, settings) for p in members])
            low, high = count_interval(poisson_binomial(ps), settings.coverage)
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
                    co2e_avoided_kg=round(float((ps * saving).sum()), 1),
                )
            )
    rows.sort(key=lambda r: (r.window_days, -r.expected, r.component.value, r.hardware_model, r.site))
    return rows

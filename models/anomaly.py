"""Unlabelled anomaly score for a device relative to its model cohort.

No labels exist for crashes, overheating or slow boots, so the score rests on a tail
probability: how unlikely is this device's last week if it behaved like the rest of
its cohort (same hardware model)? Counts (crashes, unexpected shutdowns, days with
thermal excursions) are compared with a Poisson at the cohort's daily rate, the
boot-time trend and the week's hottest CPU reading with a robust z-score against the
cohort. Counts are compared with the larger of the cohort's rate and the device's own
rate in its earlier weeks: a device that has always crashed often (a driver, its
software) is a support case, not a failing part, and must not hold a replacement ticket
for ever, while a part about to fail shows as a rise against its own past (simulated
main boards crash ~1.5 times a day in their last two weeks). ``risk`` grows with the
surprise of the rarest signal (Bonferroni-corrected,
see :func:`surprise_risk`); it is a ranking scale, not a calibrated probability,
because there are no labels to calibrate it on.

Cohort rates come from :meth:`AnomalyScorer.fit_baseline` (the processor calls it
periodically with the states it holds, see ``ScorerSet.fit_baselines``); cohorts with
fewer than ``MIN_COHORT`` devices fall back to fleet-wide priors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from scipy.special import ndtr, pdtrc

from fleetpulse.contract import Component, RiskScore
from fleetpulse.models.base import make_score, scorable
from fleetpulse.models.explain import factor
from fleetpulse.models.feature_cache import device_features
from fleetpulse.models.state import DeviceState

MIN_COHORT = 20
COUNT_SIGNALS = {
    # 7-day count feature -> 30-day feature the cohort's daily rate is estimated from
    "crashes_7d": "crashes_30d",
    "unexpected_shutdowns_7d": "unexpected_shutdowns_30d",
    "thermal_excursions_7d": "thermal_excursions_30d",
}
PRIOR_DAILY_RATE = {"crashes_7d": 0.02, "unexpected_shutdowns_7d": 0.01, "thermal_excursions_7d": 0.02}
PRIOR_BOOT_TREND = (0.0, 0.5)  # median, robust scale (s/day)
PRIOR_CPU_MAX = (80.0, 6.0)  # median, robust scale (deg C) of the hottest CPU reading in 7 days
# continuous signals compared by robust z-score: feature -> CohortBaseline attribute
ROBUST_SIGNALS = {"boot_duration_trend_s_per_day": "boot_trend", "cpu_max_c_7d": "cpu_max"}
OWN_NOISE = {"boot_duration_trend_s_per_day": "boot_duration_trend_se"}
"""The device's own uncertainty of a signal, added to the cohort's spread in the z-score:
a noisy device's fitted trend deviates from the cohort's by chance alone."""
SIGNALS = len(COUNT_SIGNALS) + len(ROBUST_SIGNALS)
EXPLAINED_BY = {
    Component.THERMAL: frozenset({"thermal_excursions_7d", "cpu_max_c_7d"}),
    Component.MEMORY: frozenset({"crashes_7d", "unexpected_shutdowns_7d"}),
}
"""Anomaly signals a specific diagnosis accounts for: failing cooling runs hot; failing memory crashes."""
MIN_TREND_DAYS = 14
MIN_OWN_DAYS = 14
"""Earlier active days (before the scored week) needed before a device's own rate counts."""
SURPRISE_HALF = 6.0  # risk 0.5 at a corrected p-value of 1e-6


def _usable(feats: dict[str, float], signal: str) -> float:
    """A boot-time trend over fewer than ``MIN_TREND_DAYS`` days is noise, not a signal."""
    if signal == "boot_duration_trend_s_per_day" and not feats["active_days_30d"] >= MIN_TREND_DAYS:
        return math.nan
    return feats[signal]


def expected_daily_rate(feats: dict[str, float], signal: str, cohort_rate: float) -> tuple[float, bool]:
    """(daily rate the week's count is judged against, whether it is the device's own).

    The device's own rate comes from its 30-day count minus the scored week, over the
    active days before that week, once there are ``MIN_OWN_DAYS`` of them.
    """
    earlier_days = feats["active_days_30d"] - feats["active_days_7d"]
    earlier_count = feats[COUNT_SIGNALS[signal]] - feats[signal]
    if not earlier_days >= MIN_OWN_DAYS or math.isnan(earlier_count):
        return cohort_rate, False
    own = earlier_count / earlier_days
    return (own, True) if own > cohort_rate else (cohort_rate, False)


def poisson_sf(k: float, mu: float) -> float:
    """``scipy.stats.poisson.sf(k, mu)`` for one pair of floats, value for value.

    The distribution object spends ~80 µs per scalar call on array handling around the
    same special function: several times a device's whole scoring on the worker's hot path.
    """
    if math.isnan(k) or math.isnan(mu) or mu < 0:
        return math.nan
    if k < 0:
        return 1.0
    if math.isinf(k):
        return 0.0
    return min(1.0, max(0.0, float(pdtrc(math.floor(k), mu))))


def normal_sf(x: float) -> float:
    """``scipy.stats.norm.sf(x)`` for one float, value for value (see :func:`poisson_sf`)."""
    return float(ndtr(-x))


def surprise_risk(pvalue: float) -> float:
    """Map a signal's p-value to [0, 1) without saturating: s = -log10 of the
    Bonferroni-corrected p-value, risk = s / (s + SURPRISE_HALF). A flaky-but-healthy
    device at p = 1e-9 and a dying one at p = 1e-40 stay distinguishable, which a plain
    1 - p (both 1.0) would not."""
    corrected = min(1.0, SIGNALS * max(pvalue, 1e-300))
    surprise = -math.log10(corrected)
    return surprise / (surprise + SURPRISE_HALF)


def cohort_of(state: DeviceState) -> str:
    return state.model or (state.kind.value if state.kind else "unknown")


@dataclass
class CohortBaseline:
    daily_rate: dict[str, float]
    boot_trend: tuple[float, float]
    devices: int
    cpu_max: tuple[float, float] = PRIOR_CPU_MAX


def _robust(values: list[float], prior: tuple[float, float], floor: float) -> tuple[float, float]:
    """(median, 1.4826 * MAD) of the known values, or ``prior`` when too few are known."""
    known = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if len(known) < MIN_COHORT:
        return prior
    median = float(np.median(known))
    return median, max(float(np.median(np.abs(known - median))) * 1.4826, floor)


@dataclass
class AnomalyScorer:
    name: str = "device-anomaly"
    version: str = "1"
    component: Component = Component.DEVICE
    horizon_days: int = 30
    baselines: dict[str, CohortBaseline] = field(default_factory=dict)

    def fit_baseline(self, states: Sequence[DeviceState]) -> None:
        """Cohort rates from a population of states (the whole table, or a large sample)."""
        by_cohort: dict[str, list[dict[str, float]]] = {}
        for state in scorable(states):
            feats = device_features(state)
            if not math.isnan(feats["active_days_30d"]):
                by_cohort.setdefault(cohort_of(state), []).append(feats)
        self.baselines = {}
        for cohort, rows in by_cohort.items():
            if len(rows) < MIN_COHORT:
                continue
            days = sum(r["active_days_30d"] for r in rows)
            rates = {}
            for signal, monthly in COUNT_SIGNALS.items():
                total = sum(0.0 if math.isnan(r[monthly]) else r[monthly] for r in rows)
                rates[signal] = max(total / max(days, 1.0), 1e-4)
            boot = _robust([_usable(r, "boot_duration_trend_s_per_day") for r in rows], PRIOR_BOOT_TREND, 0.05)
            cpu = _robust([r["cpu_max_c_7d"] for r in rows], PRIOR_CPU_MAX, 1.0)
            self.baselines[cohort] = CohortBaseline(rates, boot, len(rows), cpu)

    def _baseline(self, state: DeviceState) -> CohortBaseline:
        return self.baselines.get(cohort_of(state)) or CohortBaseline(PRIOR_DAILY_RATE, PRIOR_BOOT_TREND, 0)

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            if not state.device.days:
                continue
            feats = device_features(state)
            base = self._baseline(state)
            exposure = max(feats["active_days_7d"], 1.0)
            pvalues: dict[str, float] = {}
            against_own: set[str] = set()
            for signal in COUNT_SIGNALS:
                observed = feats[signal]
                if math.isnan(observed):
                    continue
                rate, own = expected_daily_rate(feats, signal, base.daily_rate[signal])
                if own:
                    against_own.add(signal)
                pvalues[signal] = poisson_sf(observed - 1.0, rate * exposure) if observed > 0 else 1.0
            for signal, attribute in ROBUST_SIGNALS.items():
                value = _usable(feats, signal)
                if not math.isnan(value):
                    center, scale = getattr(base, attribute)
                    own_noise = feats.get(OWN_NOISE.get(signal, ""), 0.0)
                    if not math.isnan(own_noise):
                        scale = math.hypot(scale, own_noise)
                    pvalues[signal] = normal_sf((value - center) / scale)
            if not pvalues:
                continue
            ranked = sorted(pvalues.items(), key=lambda kv: kv[1])
            risk = surprise_risk(ranked[0][1])
            cohort_text = (
                f"cohort '{cohort_of(state)}' ({base.devices} devices)" if base.devices else "fleet-wide priors"
            )
            factors = [
                factor(
                    name,
                    feats[name],
                    surprise_risk(p),
                    "; unusual even against this device's own earlier weeks"
                    if name in against_own
                    else f"; unusual versus {cohort_text}",
                )
                for name, p in ranked[:3]
                if p < 0.5
            ]
            scores.append(make_score(self, state, now, risk=risk, horizon_days=self.horizon_days, factors=factors))
        return scores

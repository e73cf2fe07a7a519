"""Unlabelled anomaly score for a device relative to its model cohort.

No labels exist for crashes, overheating or slow boots, so the score is a tail
probability: how unlikely is this device's last week if it behaved like the rest of
its cohort (same hardware model)? Counts (crashes, unexpected shutdowns, days with
thermal excursions) are compared with a Poisson at the cohort's daily rate, the
boot-time trend with a robust z-score against the cohort. ``risk`` = 1 - the
Bonferroni-corrected smallest p-value, so a device is only "risky" when some signal
is genuinely rare for its cohort.

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
from scipy.stats import norm, poisson

from fleetpulse.contract import Component, RiskScore
from fleetpulse.models.base import make_score, scorable
from fleetpulse.models.explain import factor
from fleetpulse.models.features import device_features
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
SIGNALS = len(COUNT_SIGNALS) + 1


def cohort_of(state: DeviceState) -> str:
    return state.model or (state.kind.value if state.kind else "unknown")


@dataclass
class CohortBaseline:
    daily_rate: dict[str, float]
    boot_trend: tuple[float, float]
    devices: int


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
            trends = np.array([r["boot_duration_trend_s_per_day"] for r in rows], dtype=float)
            trends = trends[~np.isnan(trends)]
            boot = PRIOR_BOOT_TREND
            if len(trends) >= MIN_COHORT:
                mad = float(np.median(np.abs(trends - np.median(trends)))) * 1.4826
                boot = (float(np.median(trends)), max(mad, 0.05))
            self.baselines[cohort] = CohortBaseline(rates, boot, len(rows))

    def _baseline(self, state: DeviceState) -> CohortBaseline:
        return self.baselines.get(cohort_of(state)) or CohortBaseline(PRIOR_DAILY_RATE, PRIOR_BOOT_TREND, 0)

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            if not state.device.days:
                continue
            feats = device_features(state)
            base = self._baseline(state)
            exposure = min(7.0, feats["active_days_30d"])
            pvalues: dict[str, float] = {}
            for signal in COUNT_SIGNALS:
                observed = feats[signal]
                if math.isnan(observed):
                    continue
                mu = base.daily_rate[signal] * max(exposure, 1.0)
                pvalues[signal] = float(poisson.sf(observed - 1.0, mu)) if observed > 0 else 1.0
            trend = feats["boot_duration_trend_s_per_day"]
            if not math.isnan(trend):
                pvalues["boot_duration_trend_s_per_day"] = float(
                    norm.sf((trend - base.boot_trend[0]) / base.boot_trend[1])
                )
            if not pvalues:
                continue
            ranked = sorted(pvalues.items(), key=lambda kv: kv[1])
            risk = 1.0 - min(1.0, SIGNALS * ranked[0][1])
            factors = [factor(name, feats[name], 1.0 - min(1.0, SIGNALS * p)) for name, p in ranked[:3] if p < 0.5]
            cohort_text = (
                f"cohort '{cohort_of(state)}' ({base.devices} devices)" if base.devices else "fleet-wide priors"
            )
            factors = [f.model_copy(update={"text": f"{f.text}; unusual versus {cohort_text}"}) for f in factors]
            scores.append(make_score(self, state, now, risk=risk, horizon_days=self.horizon_days, factors=factors))
        return scores

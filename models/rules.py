"""Honest rule scorers: the baselines every trained model must beat, and the fallback
when no trained artifact is installed.

Their ``risk`` values are fixed levels, not calibrated probabilities: a rule can only
say "flagged" or "not flagged" (and the battery rule "crosses within the horizon").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from fleetpulse.contract import Component, Factor, RiskScore
from fleetpulse.models.base import make_score, scorable
from fleetpulse.models.battery import (
    MIN_RUNTIME_MINUTES,
    SERVICE_RATIO,
    WORN_OUT_RATIO,
    Crossing,
    battery_trend,
    runtime_crossing,
)
from fleetpulse.models.explain import factor
from fleetpulse.models.feature_cache import battery_features, disk_features
from fleetpulse.models.features import BACKBLAZE_COUNTERS
from fleetpulse.models.state import DeviceState

NVME_SPARE_MARGIN_PCT = 0.0

RISK_CRITICAL = 0.9
RISK_FLAGGED_GROWING = 0.7
RISK_FLAGGED = 0.5
RISK_WEAR_OUT_POSSIBLE = 0.55
ORDER_LEAD_HORIZONS = 2
"""A battery swap needs ordering time: wear-out plausible within two horizons already warrants a ticket."""
RISK_SERVICE_DUE = 0.3
"""Below the default raise threshold: visible on dashboards and the device page, no ticket."""
RISK_CLEAR = 0.02


def backblaze_rule(feats: dict[str, float]) -> bool:
    """Backblaze's published rule: any of SMART 5, 187, 188, 197, 198 raw above zero."""
    return any(feats[name] > 0 for name in BACKBLAZE_COUNTERS)


def critical_signs(feats: dict[str, float]) -> list[str]:
    """Signals the drive itself declares fatal: failed SMART check, NVMe warnings, spare exhausted."""
    signs = []
    if feats["smart_failed"] == 1.0:
        signs.append("smart_failed")
    if feats["critical_warning"] > 0:
        signs.append("critical_warning")
    if feats["media_errors"] > 0:
        signs.append("media_errors")
    if feats["spare_margin_pct"] <= NVME_SPARE_MARGIN_PCT:
        signs.append("spare_margin_pct")
    return signs


class DiskRuleScorer:
    """Backblaze's rule plus the NVMe health log's own alarms."""

    name = "disk-rule"
    version = "1"
    component = Component.DISK

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            for key, disk in state.disks.items():
                feats = disk_features(disk)
                critical = critical_signs(feats)
                flagged = [n for n in BACKBLAZE_COUNTERS if feats[n] > 0]
                growing = [n for n in flagged if feats[f"{n}_delta_7d"] > 0]
                if critical:
                    risk = RISK_CRITICAL
                elif growing:
                    risk = RISK_FLAGGED_GROWING
                elif flagged:
                    risk = RISK_FLAGGED
                else:
                    risk = RISK_CLEAR
                names = critical + growing + [n for n in flagged if n not in growing]
                factors = [factor(n, feats[n], 1.0) for n in names]
                factors += [factor(f"{n}_delta_7d", feats[f"{n}_delta_7d"], 0.5) for n in growing]
                scores.append(
                    make_score(self, state, now, risk=risk, horizon_days=30, component_id=key, factors=factors)
                )
        return scores


def _days_to_next_threshold(
    level: float, service: Crossing | None, worn: Crossing | None
) -> tuple[float | None, float | None, float | None]:
    """Days, low, high to the next threshold ahead: 80 % while above it, then 60 %.

    A battery already below 80 % is counted toward 60 %, not as "0 days": zero days reads as
    a failure today and made every such ticket critical, while its evidence said weeks.
    Below 60 % it has failed (0 days). Unprojected, there are no days at all.
    """
    if level < WORN_OUT_RATIO:
        return 0.0, None, None
    ahead = service if level >= SERVICE_RATIO else worn
    if ahead is None:
        return None, None, None
    return ahead.days, ahead.low, ahead.high


class BatteryRuleScorer:
    """Robust capacity-fade extrapolation: days until 80 % (service) and 60 % (worn out).

    Only wear-out (60 %, now or plausibly within the horizon) reaches alerting risk: a
    battery below 80 % is "service due" and shows on dashboards, but a fleet where a
    third of the laptops sit between 60 and 80 % must not get a ticket for each of them.
    """

    name = "battery-fade"
    version = "3"
    component = Component.BATTERY
    horizon_days = 30

    def _risk(self, level: float, service: Crossing | None, worn: Crossing | None) -> float:
        if level < WORN_OUT_RATIO:
            return RISK_CRITICAL
        if worn is not None and worn.days <= self.horizon_days:
            return RISK_FLAGGED_GROWING
        # The point estimate, not the low bound: on noisy readings the low bound swings by
        # months from one report to the next, which would make alerts flap.
        if worn is not None and worn.days <= ORDER_LEAD_HORIZONS * self.horizon_days:
            return RISK_WEAR_OUT_POSSIBLE
        if level < SERVICE_RATIO:
            return RISK_SERVICE_DUE
        if service is not None and service.low <= self.horizon_days:
            return 0.2
        return RISK_CLEAR

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            battery = state.battery
            if battery is None:
                continue
            feats = battery_features(battery)
            if math.isnan(feats["health_ratio"]):
                continue
            trend = battery_trend(battery)
            level = trend.level if trend else feats["health_ratio_last"]
            # no projection (and no days-to-threshold on the ticket) until the fade is real
            projected = trend if trend is not None and trend.fading else None
            service = projected.crossing(SERVICE_RATIO) if projected else None
            worn = projected.crossing(WORN_OUT_RATIO) if projected else None
            runtime = runtime_crossing(battery, MIN_RUNTIME_MINUTES, projected) if projected else None
            factors: list[Factor] = [factor("health_ratio", level, 1.0)]
            if not math.isnan(feats["fade_per_day"]):
                factors.append(factor("fade_per_day", feats["fade_per_day"], 0.5))
            if worn is not None and worn.days > 0:
                factors.append(
                    Factor(
                        feature="days_to_60pct",
                        value=worn.days,
                        text=f"about {worn.days:.0f} days until 60% of design capacity",
                    )
                )
            if runtime is not None:
                factors.append(
                    Factor(
                        feature="days_to_runtime_3h",
                        value=runtime.days,
                        text=f"about {runtime.days:.0f} days until runtime falls under 3 h",
                    )
                )
            if not math.isnan(feats["cycle_count"]):
                factors.append(factor("cycle_count", feats["cycle_count"], 0.1))
            risk = self._risk(level, service, worn)
            days, low, high = _days_to_next_threshold(level, service, worn)
            scores.append(
                make_score(
                    self,
                    state,
                    now,
                    risk=risk,
                    horizon_days=self.horizon_days,
                    factors=factors,
                    days_to_failure=days,
                    days_low=low,
                    days_high=high,
                )
            )
        return scores

"""Rule scorers for cooling (fan, heatsink, thermal paste) and memory modules.

Like :mod:`fleetpulse.models.rules` these say "flagged" or "not flagged" at fixed risk
levels, not calibrated probabilities: there are no labelled field data for either part
to calibrate on. Thresholds come from published operating practice or are stated
assumptions (below); none was tuned on the fleet simulator.

Both scorers only ever alert on *change* of a device against its own past, or on
errors the hardware itself declares: a laptop model that simply runs warm, or a
DIMM with a few old corrected errors, must not produce a ticket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fleetpulse.contract import Component, Factor, RiskScore
from fleetpulse.models.base import make_score, scorable
from fleetpulse.models.explain import factor
from fleetpulse.models.feature_cache import memory_features, thermal_features
from fleetpulse.models.rules import RISK_CLEAR, RISK_CRITICAL, RISK_FLAGGED_GROWING, RISK_SERVICE_DUE
from fleetpulse.models.state import DeviceState

HORIZON_DAYS = 30

TEMP_RISE_C = 10.0
"""Rise of the weekly median of daily peak temperatures over the device's own earlier weeks.
Assumption: clogged heatsinks and dried-out paste raise load temperatures by 10-20 °C
(service practice), while office air may vary by about 6 °C (German workplace rule ASR A3.5:
at least 20 °C, not above 26 °C), so a 10 °C rise is more than the room explains."""
HOT_DAYS = 3
"""Days of the last 7 with a reading at or above 95 °C (``THERMAL_EXCURSION_C``, just below the
100-105 °C junction limit of current Intel/AMD mobile CPUs, where they throttle): running
at the limit on most working days, not after one heavy job."""
FAN_RATIO = 0.6
"""Fan tops out below 60 % of its own earlier peak speed. Assumption: worn bearings and dust
lower the speed a fan can reach; a week's median of daily peaks moves far less with load."""
MIN_FAN_RPM = 500.0
"""A lower earlier peak is a fan resting at idle ("zero-rpm" modes), not a top speed to compare with."""
CE_PER_DAY = 10.0
"""Corrected errors in one day that count as a storm: mcelog's default per-DIMM trigger
(``ce-error-threshold = 10 / 24h``)."""
CE_GROWTH_DAYS = 3
"""Days of the last 7 on which corrected errors grew. Soft errors (particle strikes) are
one-off; errors that keep coming back point to a permanent fault in a module, which field
studies link to later uncorrectable errors (Schroeder, Pinheiro, Weber, "DRAM errors in
the wild", SIGMETRICS 2009; Sridharan, Liberty, "A study of DRAM failures in the field", SC 2012)."""


@dataclass(frozen=True, slots=True)
class ThermalEvidence:
    rise: bool
    fan_slow: bool
    throttling: bool
    hot: bool

    @property
    def degrading(self) -> bool:
        """The device cools worse than it used to: the only evidence that the part is at fault."""
        return self.rise or self.fan_slow

    @property
    def count(self) -> int:
        return sum((self.rise, self.fan_slow, self.throttling, self.hot))


def thermal_evidence(feats: dict[str, float]) -> ThermalEvidence:
    """Comparisons with ``nan`` are false: an unknown signal is no evidence either way."""
    return ThermalEvidence(
        rise=feats["cpu_max_c_rise"] >= TEMP_RISE_C,
        fan_slow=feats["fan_rpm_baseline"] >= MIN_FAN_RPM and feats["fan_rpm_ratio"] <= FAN_RATIO,
        throttling=feats["throttle_increase_7d"] > 0,
        hot=feats["hot_days_7d"] >= HOT_DAYS,
    )


def thermal_risk(ev: ThermalEvidence) -> float:
    """Running at the limit while cooling worse than before is critical; two independent
    signs of worse cooling (or one plus throttling) are a ticket; hot-and-throttling
    alone is a warm machine or a heavy workload, shown on dashboards only."""
    if ev.hot and ev.degrading:
        return RISK_CRITICAL
    if ev.degrading and ev.count >= 2:
        return RISK_FLAGGED_GROWING
    if ev.count:
        return RISK_SERVICE_DUE
    return RISK_CLEAR


def _known(value: float) -> bool:
    return not math.isnan(value)


class ThermalRuleScorer:
    """Fan and heatsink wear: temperature rise and fan slow-down against the device's own past."""

    name = "thermal-rule"
    version = "1"
    component = Component.THERMAL

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            feats = thermal_features(state)
            if not any(_known(v) for v in feats.values()):
                continue
            ev = thermal_evidence(feats)
            factors = [factor("cpu_max_c_rise", feats["cpu_max_c_rise"], 1.0)] if ev.rise else []
            if ev.fan_slow:
                factors.append(factor("fan_rpm_ratio", feats["fan_rpm_ratio"], 1.0))
            if ev.hot:
                factors.append(factor("hot_days_7d", feats["hot_days_7d"], 0.8))
            if ev.throttling:
                factors.append(factor("throttle_increase_7d", feats["throttle_increase_7d"], 0.5))
            if _known(feats["cpu_max_c_recent"]):
                factors.append(factor("cpu_max_c_recent", feats["cpu_max_c_recent"], 0.1))
            scores.append(
                make_score(self, state, now, risk=thermal_risk(ev), horizon_days=HORIZON_DAYS, factors=factors)
            )
        return scores


def memory_risk(feats: dict[str, float]) -> float:
    """New uncorrectable errors are critical (mcelog's default DIMM trigger is one per day);
    a storm or recurring corrected errors are a ticket; a single burst, or uncorrectable
    errors of unknown age already on record, are watched; static corrected counts are clear.

    Only *new* uncorrectable errors raise a ticket: Windows keeps WHEA events in its log
    for months, so a count that does not grow would re-open a ticket after every cooldown,
    even after the module was swapped.
    """
    if feats["mem_uncorrectable_increase_7d"] > 0:
        return RISK_CRITICAL
    if feats["mem_correctable_max_day_7d"] >= CE_PER_DAY or feats["mem_correctable_growth_days_7d"] >= CE_GROWTH_DAYS:
        return RISK_FLAGGED_GROWING
    if feats["mem_correctable_increase_7d"] > 0 or feats["mem_uncorrectable"] > 0:
        return RISK_SERVICE_DUE
    return RISK_CLEAR


class MemoryRuleScorer:
    """Memory modules: ECC/WHEA error counters (devices without error reporting are not scored).

    A machine without ECC (most desktops and laptops) reports no memory section, and "no
    errors detected" there is not "healthy": such devices get no memory score at all.
    Windows' WHEA fatal events also cover CPU machine checks, so a critical memory ticket
    on a Windows PC means "run a memory test", not a proven module fault.
    """

    name = "memory-rule"
    version = "1"
    component = Component.MEMORY

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        scores = []
        for state in scorable(states):
            feats = memory_features(state)
            if not any(_known(v) for v in feats.values()):
                continue
            risk = memory_risk(feats)
            factors: list[Factor] = []
            if feats["mem_uncorrectable_increase_7d"] > 0:
                factors.append(factor("mem_uncorrectable_increase_7d", feats["mem_uncorrectable_increase_7d"], 1.0))
            elif feats["mem_uncorrectable"] > 0:
                factors.append(factor("mem_uncorrectable", feats["mem_uncorrectable"], 0.3))
            if feats["mem_correctable_max_day_7d"] > 0:
                factors.append(factor("mem_correctable_max_day_7d", feats["mem_correctable_max_day_7d"], 0.7))
                factors.append(factor("mem_correctable_growth_days_7d", feats["mem_correctable_growth_days_7d"], 0.5))
            if feats["mem_correctable"] > 0:
                factors.append(factor("mem_correctable", feats["mem_correctable"], 0.1))
            scores.append(make_score(self, state, now, risk=risk, horizon_days=HORIZON_DAYS, factors=factors))
        return scores

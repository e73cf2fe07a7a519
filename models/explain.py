"""Plain-words descriptions of features, for the factors a ticket shows a fleet manager."""

from __future__ import annotations

import math

from fleetpulse.contract import Factor

_COUNTER_WORDS = {
    "smart_5": "reallocated sectors (SMART 5)",
    "smart_187": "uncorrectable errors reported (SMART 187)",
    "smart_188": "command timeouts (SMART 188)",
    "smart_197": "sectors pending reallocation (SMART 197)",
    "smart_198": "offline uncorrectable sectors (SMART 198)",
    "smart_199": "cable/interface CRC errors (SMART 199)",
    "media_errors": "NVMe media errors",
}
_PLAIN = {
    "critical_warning": "NVMe critical warning flags {v:.0f}",
    "available_spare_pct": "NVMe spare blocks left {v:.0f}%",
    "spare_margin_pct": "NVMe spare blocks {v:.0f} points above the vendor's threshold",
    "percentage_used": "NVMe endurance used {v:.0f}%",
    "power_on_hours": "{v:.0f} power-on hours ({y:.1f} years)",
    "temperature_c": "drive temperature {v:.0f} °C",
    "smart_failed": "drive's own SMART health check {verdict}",
    "history_days": "{v:.0f} days of history",
    "health_ratio": "battery holds {p:.0f}% of its design capacity",
    "health_ratio_last": "latest reading {p:.0f}% of design capacity",
    "fade_per_day": "battery loses {p100:.2f} percentage points of capacity per 100 days",
    "fade_per_100_cycles": "battery loses {p:.1f} percentage points per 100 charge cycles",
    "cycle_count": "{v:.0f} charge cycles",
    "runtime_full_minutes": "runtime on a full charge {v:.0f} min",
    "crashes_7d": "{v:.0f} crashes in 7 days",
    "crashes_30d": "{v:.0f} crashes in 30 days",
    "crashes_1d": "{v:.0f} crashes in the last day",
    "unexpected_shutdowns_7d": "{v:.0f} unexpected shutdowns in 7 days",
    "unexpected_shutdowns_30d": "{v:.0f} unexpected shutdowns in 30 days",
    "thermal_excursions_7d": "overheated (>=95 °C) on {v:.0f} days of the last 7",
    "thermal_excursions_30d": "overheated (>=95 °C) on {v:.0f} days of the last 30",
    "cpu_max_c_7d": "hottest CPU reading in 7 days {v:.0f} °C",
    "boot_duration_s_7d": "typical boot time {v:.0f} s",
    "boot_duration_trend_s_per_day": "boot time changing by {v:+.1f} s per day",
    "boot_duration_trend_se": "boot-time trend uncertain by ±{v:.1f} s per day",
    "mem_uncorrectable": "{v:.0f} uncorrectable memory errors",
    "mem_correctable_delta_7d": "{v:.0f} new correctable memory errors in 7 days",
    "active_days_7d": "reported on {v:.0f} of the last 7 days",
    "active_days_30d": "reported on {v:.0f} of the last 30 days",
    "cpu_max_c_recent": "typical daily peak temperature this week {v:.0f} °C",
    "cpu_max_c_baseline": "typical daily peak temperature in earlier weeks {v:.0f} °C",
    "cpu_max_c_rise": "daily peak temperature {v:+.0f} °C against the device's own earlier weeks",
    "hot_days_7d": "reached 95 °C or more on {v:.0f} of the last 7 days",
    "throttle_increase_7d": "CPU slowed itself down for heat {v:.0f} times in 7 days",
    "fan_rpm_recent": "fan peaks at {v:.0f} rpm this week",
    "fan_rpm_baseline": "fan peaked at {v:.0f} rpm in earlier weeks",
    "fan_rpm_ratio": "fan reaches only {p:.0f}% of its earlier top speed",
    "mem_uncorrectable_increase_7d": "{v:.0f} new uncorrectable memory errors in 7 days",
    "mem_correctable": "{v:.0f} corrected memory errors on record",
    "mem_correctable_increase_7d": "{v:.0f} new corrected memory errors in 7 days",
    "mem_correctable_max_day_7d": "up to {v:.0f} new corrected memory errors in one day",
    "mem_correctable_growth_days_7d": "new corrected memory errors on {v:.0f} of the last 7 days",
}


def describe(feature: str, value: float) -> str:
    """One short sentence for ``feature`` at ``value`` (the feature name if unknown)."""
    if math.isnan(value):
        return f"{feature} unknown"
    base, _, suffix = feature.partition("_delta_")
    if suffix and base in _COUNTER_WORDS:
        return f"{value:+.0f} {_COUNTER_WORDS[base]} in the last {suffix.removesuffix('d')} day(s)"
    base, _, suffix = feature.partition("_slope_")
    if suffix and base in _COUNTER_WORDS:
        return f"{_COUNTER_WORDS[base]} growing by {value:.2f} per day (30-day trend)"
    base, _, suffix = feature.partition("_growth_days_")
    if suffix and base in _COUNTER_WORDS:
        return f"{_COUNTER_WORDS[base]} grew on {value:.0f} of the last 30 days"
    if feature in _COUNTER_WORDS:
        return f"{value:.0f} {_COUNTER_WORDS[feature]}"
    template = _PLAIN.get(feature)
    if template is None:
        return f"{feature} = {value:.3g}"
    return template.format(
        v=value, y=value / 8766.0, p=100.0 * value, p100=100.0 * 100.0 * value, verdict="FAILED" if value else "passed"
    )


def factor(feature: str, value: float, contribution: float, suffix: str = "") -> Factor:
    """The factor for ``feature`` at ``value``; ``suffix`` (context the scorer adds) ends its text.

    One validated ``Factor`` per line on a ticket: scorers pass their context here instead
    of copying a finished factor to change its text."""
    return Factor(
        feature=feature,
        value=None if math.isnan(value) else value,
        contribution=contribution if math.isfinite(contribution) else 0.0,
        text=describe(feature, value) + suffix,
    )

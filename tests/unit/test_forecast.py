"""The parts forecast's pure functions: probability per window, the exact Poisson-binomial, the grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetpulse.alerts.tickets import replacement_days
from fleetpulse.contract import Component, DeviceKind, Factor, RiskScore
from fleetpulse.models.forecast import (
    count_interval,
    crossing_probability,
    forecast,
    hazard_converted,
    poisson_binomial,
    shift_odds,
    window_probability,
)
from fleetpulse.models.forecast_rows import PartRisk
from fleetpulse.models.forecast_settings import ForecastSettings
from tests.alerts_support import NOW

SETTINGS = ForecastSettings()


def part(component: Component = Component.DISK, risk: float = 0.01, **kw: object) -> PartRisk:
    fields: dict[str, object] = {
        "component": component,
        "site": "Town Hall",
        "hardware_model": "ThinkPad T14",
        "device_kind": DeviceKind.LAPTOP,
        "risk": risk,
        "horizon_days": 30,
    }
    fields.update(kw)
    return PartRisk(**fields)  # type: ignore[arg-type]


def test_poisson_binomial_matches_the_binomial_and_brute_force() -> None:
    pmf = poisson_binomial([0.3] * 10)
    binomial = [math.comb(10, k) * 0.3**k * 0.7 ** (10 - k) for k in range(11)]
    assert np.allclose(pmf, binomial[: len(pmf)], atol=1e-12)
    ps = [0.1, 0.5, 0.9, 1.0, 0.0]
    brute = np.zeros(6)
    for mask in range(32):
        outcome = [(mask >> i) & 1 for i in range(5)]
        brute[sum(outcome)] += math.prod(p if o else 1 - p for p, o in zip(ps, outcome, strict=True))
    assert np.allclose(np.pad(poisson_binomial(ps), (0, 6))[:6], brute, atol=1e-12)
    assert poisson_binomial([])[0] == pytest.approx(1.0)


def test_poisson_binomial_of_a_large_fleet_is_exact_in_its_mean_and_cheap() -> None:
    ps = np.random.default_rng(0).uniform(0.0, 0.004, 100_000)
    pmf = poisson_binomial(ps)
    assert float((np.arange(len(pmf)) * pmf).sum()) == pytest.approx(ps.sum(), rel=1e-9)
    assert len(pmf) < 1000  # truncated to where the mass is


def test_interval_is_equal_tailed_and_holds_at_least_the_nominal_share() -> None:
    pmf = poisson_binomial([0.2] * 50)
    low, high = count_interval(pmf, 0.9)
    assert pmf[low : high + 1].sum() >= 0.9
    assert pmf[:low].sum() <= 0.05
    assert pmf[high + 1 :].sum() <= 0.05
    assert count_interval(poisson_binomial([0.0, 0.0]), 0.9) == (0, 0)
    assert count_interval(poisson_binomial([1.0, 1.0, 1.0]), 0.9) == (3, 3)


def test_horizon_conversion_at_constant_hazard() -> None:
    assert hazard_converted(0.1, 30, 30) == pytest.approx(0.1)
    assert hazard_converted(0.1, 30, 90) == pytest.approx(1 - 0.9**3)
    assert hazard_converted(1.0, 30, 1) == 1.0
    assert hazard_converted(0.0, 30, 90) == 0.0


def test_battery_uses_its_end_of_life_estimate_and_interval() -> None:
    assert crossing_probability(0.0, 30) == 1.0
    soon, late = crossing_probability(10.0, 30), crossing_probability(400.0, 30)
    assert soon > 0.5 > late
    assert crossing_probability(400.0, 90) > late  # a longer window can only hold more
    worn = part(Component.BATTERY, risk=0.9, replace_in_days=0.0)
    assert window_probability(worn, 30, SETTINGS) == 1.0


def test_a_rule_scoring_clear_gets_the_annual_rate_not_its_level() -> None:
    fan = part(Component.THERMAL, risk=0.02)
    assert window_probability(fan, 365, SETTINGS) == pytest.approx(SETTINGS.annual_failure_rate[Component.THERMAL])
    flagged = part(Component.THERMAL, risk=0.7)
    assert window_probability(flagged, 30, SETTINGS) == pytest.approx(0.7)
    disk = part(Component.DISK, risk=0.02)  # a calibrated probability, moved to the per-day base rate
    assert window_probability(disk, 30, SETTINGS) == pytest.approx(shift_odds(0.02, SETTINGS.disk_odds_factor))
    assert window_probability(disk, 30, ForecastSettings(disk_odds_factor=1.0)) == pytest.approx(0.02)
    assert shift_odds(0.5, 0.1) == pytest.approx(0.1 / 1.1)
    assert shift_odds(1.0, 0.1) == 1.0


def test_forecast_groups_by_component_model_and_site_with_co2e() -> None:
    parts = [part(risk=0.5) for _ in range(4)] + [part(site="Library", risk=0.1), part(device_kind=None, risk=0.5)]
    rows = forecast(parts, ForecastSettings(disk_odds_factor=1.0), windows=(30,))
    town = next(r for r in rows if r.site == "Town Hall")
    assert (town.parts, town.expected) == (5, 2.5)
    assert town.low <= 2 <= town.high
    # laptop 250 kg - disk 30 kg per repair, for the four laptops of known kind
    assert town.co2e_avoided_kg == pytest.approx(4 * 0.5 * 220.0)
    assert [r.site for r in rows] == ["Town Hall", "Library"]


def _score(**kw: object) -> RiskScore:
    fields: dict[str, object] = {
        "device_id": "pc-1",
        "component": Component.BATTERY,
        "risk": 0.55,
        "model_name": "battery-fade",
        "model_version": "3",
        "report_seq": 1,
        "collected_at": NOW,
        "scored_at": NOW,
    }
    fields.update(kw)
    return RiskScore.model_validate(fields)


def test_battery_replacement_days_come_from_the_scorers_60_percent_estimate() -> None:
    factor = Factor(feature="days_to_60pct", value=45.0, text="about 45 days until 60% of design capacity")
    assert replacement_days(_score(days_to_failure=12.0, factors=[factor])) == 45.0
    assert replacement_days(_score(days_to_failure=0.0)) == 0.0
    assert replacement_days(_score(days_to_failure=12.0)) is None  # days to 80 %, not to replacement
    assert replacement_days(_score(component=Component.DISK, days_to_failure=3.0)) is None


def test_vectorised_battery_interval_is_the_served_one() -> None:
    from fleetpulse.models.battery_interval import interval
    from fleetpulse.models.forecast import _battery_intervals

    days = np.array([0.0, 0.5, 12.0, 30.0, 30.5, 89.0, 200.0, 365.0, 800.0, 3650.0])
    low, high = _battery_intervals(days)
    expected = np.array([interval(float(d)) for d in days])
    assert np.allclose(low, expected[:, 0])
    assert np.allclose(high, expected[:, 1])

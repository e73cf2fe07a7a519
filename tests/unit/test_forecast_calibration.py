"""The forecast's recalibration from past windows and its overdispersed interval, and the store path that feeds it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from fleetpulse.alerts.fleetlog import FleetLog
from fleetpulse.alerts.forecast import fleet_calibration, fleet_forecast
from fleetpulse.alerts.store.audit import AuditActor, AuditContext
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.contract import Component
from fleetpulse.models import forecast_backtest as fb
from fleetpulse.models.forecast import count_interval, poisson_binomial
from fleetpulse.models.forecast_calibration import (
    WindowCount,
    apply_factor,
    calibrate,
    mixed_count_pmf,
    window_dispersion,
)
from fleetpulse.models.forecast_rows import Calibration, calibration_stratum
from fleetpulse.models.forecast_settings import CalibrationPrior, ForecastSettings
from tests.alerts_support import NOW, make_inventory, store, store_url
from tests.unit.test_forecast_api import score, settings_for

__all__ = ["store", "store_url"]  # fixtures

PRIOR = CalibrationPrior(spread_shape=2.0, pooled_strength=2.0, half_life_days=None)


def counts(model: str, observed: int, expected: float, windows: int = 1, start: float = 0.0) -> list[WindowCount]:
    return [
        WindowCount(Component.DISK, model, start + 30 * k, start + 30 * (k + 1), expected, observed)
        for k in range(windows)
    ]


def test_a_model_with_little_evidence_keeps_near_the_pooled_factor_a_well_observed_one_its_own() -> None:
    evidence = counts("big", 200, 100.0, windows=6) + counts("small", 2, 0.5) + counts("other", 60, 60.0, windows=6)
    fitted = calibrate(evidence, 1000.0, PRIOR)
    pooled = fitted.of(Component.DISK, "never seen").factor
    big, small = fitted.of(Component.DISK, "big").factor, fitted.of(Component.DISK, "small").factor
    assert big == pytest.approx(2.0, rel=0.05)  # 1200 observed / 600 expected: its own rate
    assert abs(small - pooled) < abs(4.0 - pooled)  # raw 2 / 0.5 = 4, pulled toward the pooled factor
    assert min(pooled, 4.0) < small < max(pooled, 4.0)
    assert fitted.of(Component.DISK, "other").factor == pytest.approx(1.0, rel=0.1)
    assert fitted.of(Component.DISK, "big").shape > fitted.of(Component.DISK, "small").shape  # surer with evidence


def test_no_history_gives_factor_one_and_the_prior_spread() -> None:
    fitted = calibrate([], 0.0, PRIOR)
    fit = fitted.of(Component.DISK, "x")
    assert fit.factor == 1.0
    assert fit.shape == PRIOR.spread_shape
    assert fitted.dispersion_of(Component.DISK) == PRIOR.dispersion


def test_a_factor_uses_only_windows_that_ended_before_the_forecast() -> None:
    past = counts("m", 3, 1.0, windows=3)
    future = [WindowCount(Component.DISK, "m", 60.0, 120.0, 1.0, 500)]  # still running at day 90, ends later
    assert calibrate(past + future, 90.0, PRIOR) == calibrate(past, 90.0, PRIOR)
    assert calibrate(past + future, 120.0, PRIOR) != calibrate(past, 120.0, PRIOR)


def test_the_backtest_scores_window_k_with_windows_ended_before_its_start_only() -> None:
    """Changing what happens in window 2 and later leaves the forecasts of windows 0-2 unchanged."""
    starts = fb.window_starts(4, history=1)
    drives = 40
    models = ["A"] * drives
    window = np.repeat(np.arange(5), drives)
    drive = np.tile(np.arange(drives), 5)
    risk = np.full(len(drive), 0.02)

    def run(late_failures: int) -> list[fb.BacktestRow]:
        end = np.full(drives, starts[-1] + 60.0)
        failed = np.zeros(drives, dtype=bool)
        end[:3] = starts[1] + 5  # three fail in the history window
        failed[:3] = True
        end[3 : 3 + late_failures] = starts[3] + 5  # the rest fail in scored window 2
        failed[3 : 3 + late_failures] = True
        probes = fb.Probes(np.zeros((len(drive), 1), np.float32), drive, window, models, end, failed)
        return fb.backtest(probes, risk, 0.9, starts, history=1, prior=PRIOR)

    calm, burst = run(0), run(30)
    early = [(r.group, r.window, r.expected, r.low, r.high) for r in calm if r.window <= 2]
    assert early == [(r.group, r.window, r.expected, r.low, r.high) for r in burst if r.window <= 2]
    assert [r.expected for r in calm if r.window == 3] != [r.expected for r in burst if r.window == 3]


def test_mixture_reduces_to_the_poisson_binomial_without_dispersion() -> None:
    p = np.random.default_rng(1).uniform(0.0, 0.3, 200)
    exact = poisson_binomial(p)
    assert np.array_equal(mixed_count_pmf(p, 0.0), exact)
    near = mixed_count_pmf(p, 1e-6)
    assert np.abs(near[: len(exact)] - exact[: len(near)]).max() < 1e-3
    small = p / 10.0
    wide = mixed_count_pmf(small, 0.3)
    mean = float((np.arange(len(wide)) * wide).sum())
    assert mean == pytest.approx(small.sum(), rel=0.01)  # the hazard's multiplier has mean 1
    variance = float(((np.arange(len(wide)) - mean) ** 2 * wide).sum())
    # Poisson-binomial variance plus the multiplier's: var(X) = sum p(1-p) + 0.3 mean^2 (small p)
    assert variance == pytest.approx(float((small * (1 - small)).sum()) + 0.3 * mean**2, rel=0.1)


def test_overdispersed_interval_holds_its_nominal_share_on_overdispersed_counts() -> None:
    """Counts whose rate varies from window to window (gamma, variance 0.2): the mixture's interval holds
    ~90 %, the Poisson-binomial's far less."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0.001, 0.01, 4000)
    variance = 0.2
    trials = 400
    u = rng.gamma(1 / variance, variance, trials)
    observed = np.array([rng.binomial(1, apply_factor(p, x)).sum() for x in u])
    mixed = count_interval(mixed_count_pmf(p, variance), 0.9)
    plain = count_interval(poisson_binomial(p), 0.9)
    held = float(np.mean((observed >= mixed[0]) & (observed <= mixed[1])))
    held_plain = float(np.mean((observed >= plain[0]) & (observed <= plain[1])))
    assert 0.86 <= held <= 0.97
    assert held_plain < 0.75
    # and the dispersion is recovered from the windows by the moment estimator
    means = np.full(trials, p.sum())
    assert window_dispersion(observed, means, 0.0, 0.0) == pytest.approx(variance, abs=0.08)


def test_batteries_are_recalibrated_per_bin_of_their_estimate() -> None:
    assert calibration_stratum(Component.DISK, None) == ""
    assert calibration_stratum(Component.BATTERY, None) == "no estimate"
    assert calibration_stratum(Component.BATTERY, 0.0) == "due"
    assert calibration_stratum(Component.BATTERY, 45.0) == "estimate <= 90 d"
    assert calibration_stratum(Component.BATTERY, 4000.0) == "estimate > 365 d"
    from fleetpulse.models.battery_interval import BIN_EDGES
    from fleetpulse.models.forecast_rows import BATTERY_STRATA

    assert tuple(edge for edge, _ in BATTERY_STRATA) == BIN_EDGES[:-1]


def test_forecast_from_a_store_with_fleet_history_uses_the_learned_factor(store: TicketStore) -> None:
    """Twenty disks of one model forecast at ~0.1 failures a month, ten of them reported failed in a past
    window: the store's recalibration raises that model's forecast; another model keeps the prior."""
    settings = ForecastSettings()
    svc = TicketService(store, settings_for("sqlite://"))
    devices = [f"pc-{i}" for i in range(20)]
    for device in devices:
        svc.apply_inventory(make_inventory(device, site="Library", model="OptiPlex 7090"))
    svc.apply_inventory(make_inventory("pc-x", site="Library", model="Latitude 5440"))
    for age in (timedelta(days=65), timedelta(0)):
        svc.record_scores([score(d, 0.05, age=age) for d in [*devices, "pc-x"]])
    context = AuditContext(AuditActor.local("fm", "fleet_manager"), "req-1", "10.0.0.1")
    log = FleetLog(store)
    for device in devices[:10]:
        assert log.record_failure(
            device, Component.DISK, "sn1", (NOW - timedelta(days=50)).date(), "failed", "", context, NOW
        )
    learned = fleet_calibration(store, settings, NOW)
    assert learned.of(Component.DISK, "OptiPlex 7090").factor > 5.0
    prior_only = Calibration(prior=settings.calibration)

    def expected(calibration: Calibration, model: str) -> float:
        rows = fleet_forecast(store, settings, NOW, calibration=calibration)
        return next(r.expected for r in rows if r.hardware_model == model and r.window_days == 30)

    assert expected(learned, "OptiPlex 7090") > 5 * expected(prior_only, "OptiPlex 7090")
    assert fleet_forecast(store, settings, NOW) == fleet_forecast(store, settings, NOW, calibration=learned)
    # a model without history gets the pooled factor of the fleet, shrunk toward 1 by the prior
    pooled = learned.of(Component.DISK, "Latitude 5440").factor
    assert 1.0 < pooled < learned.of(Component.DISK, "OptiPlex 7090").factor

"""The forecast backtests: disks on the real Backblaze survival table (skips without it), batteries and fans
on the simulator, and the CLI that writes the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleetpulse.contract import Component
from fleetpulse.models import forecast_backtest as fb
from fleetpulse.models.data import SURVIVAL_FILE, cached_replay
from fleetpulse.models.forecast_settings import DISK_ODDS_FACTOR, CalibrationPrior
from fleetpulse.models.forecast_simulated import WARM_UP_DAYS, simulated_backtest
from fleetpulse.models.index import read_registry
from fleetpulse.models.registry import load_artifact
from fleetpulse.models.settings import SHIPPED_REGISTRY


def test_backtest_counts_failures_in_the_window_and_discounts_drives_that_leave() -> None:
    starts = fb.window_starts(2)
    probes = fb.Probes(
        features=np.zeros((4, 1), dtype=np.float32),
        drive=np.array([0, 1, 2, 0]),
        window=np.array([0, 0, 0, 1]),
        models=["A", "A", "B"],
        # drive 0 fails in window 1, drive 1 leaves half way through window 0 unfailed, drive 2 fails in window 0
        end_day=np.array([starts[1] + 3, starts[0] + 15, starts[0] + 1]),
        failed=np.array([True, False, True]),
    )
    rows = fb.backtest(probes, np.array([0.1, 0.5, 0.2, 0.3]), 0.9, starts)
    first = {r.group: r for r in rows if r.window == 0}
    assert first[fb.OTHER].observed == 1
    assert first[fb.OTHER].drives == 3
    assert first[fb.OTHER].expected == pytest.approx(0.1 + (1 - 0.5**0.5) + 0.2)
    assert next(r for r in rows if r.window == 1 and r.group == fb.ALL).observed == 1
    summary = {g.group: g for g in fb.summary(rows)}
    assert summary[fb.ALL].observed == 2
    assert summary[fb.ALL].windows == 2


def test_disk_backtest_on_the_real_survival_table(shared_data: Path) -> None:
    """A slice of the held-out test drives through the serving state, scored by the shipped champion."""
    path = shared_data / SURVIVAL_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found: the Backblaze survival table is needed")
    windows = fb.windows_in_data()
    assert windows == 15
    starts = fb.window_starts(windows, fb.HISTORY_WINDOWS)
    probes = fb.survival_probes(path, starts, max_drives=1500)
    assert probes.features.shape[0] == len(probes.drive) == len(probes.window) > 0
    assert set(np.unique(probes.window)) <= set(range(fb.HISTORY_WINDOWS + windows))
    registry = read_registry(SHIPPED_REGISTRY)
    scorer = load_artifact(registry, SHIPPED_REGISTRY, registry.champions[Component.DISK.value])
    risk = scorer.predict(probes.features.astype(float), fb.WINDOW_DAYS)
    prior = CalibrationPrior()
    rows = fb.backtest(probes, risk, 0.9, starts, DISK_ODDS_FACTOR, fb.HISTORY_WINDOWS, prior)
    base = fb.backtest(probes, risk, 0.9, starts, DISK_ODDS_FACTOR, fb.HISTORY_WINDOWS)
    totals = [r for r in rows if r.group == fb.ALL]
    assert len(totals) == windows
    assert sum(r.observed for r in totals) == sum(
        int(probes.failed[d] and probes.end_day[d] >= fb.window_starts(windows)[0]) for d in range(len(probes.models))
    )
    assert all(r.low <= r.expected + 1 and r.expected <= r.high + 1 for r in rows)
    assert [r.observed for r in rows] == [r.observed for r in base]
    text = fb.markdown(rows, base, base, 0.9, 0.07, prior, "disk-gbm-x", "0" * 64)
    assert "| all models | 15 |" in text


@pytest.mark.slow
def test_served_disk_odds_factor_is_the_one_measured_on_the_training_drives(shared_data: Path) -> None:
    """The forecast's default base-rate correction matches its computation (replays the table once, cached)."""
    if not (shared_data / SURVIVAL_FILE).is_file():
        pytest.skip(f"{shared_data / SURVIVAL_FILE} not found: the Backblaze survival table is needed")
    instants = cached_replay("survival", shared_data, Path(__file__).resolve().parents[2] / ".local" / "cache")
    assert fb.disk_odds_factor(instants) == pytest.approx(DISK_ODDS_FACTOR, abs=5e-5)


def test_simulated_backtest_compares_batteries_and_fans_with_ground_truth() -> None:
    result = simulated_backtest(60, seed=1, days=WARM_UP_DAYS + fb.WINDOW_DAYS)
    assert {r.group for r in result.rows} == {"battery", "thermal"}
    assert all(r.window == 0 and r.drives > 0 and r.low <= r.high for r in result.rows)
    assert [r.observed for r in result.rows] == [r.observed for r in result.uncorrected]
    assert "| battery | 1 |" in fb.simulated_markdown(result.rows, result.uncorrected, 0.9, 60, 1, result.days)


@pytest.mark.slow
def test_shipped_calibration_prior_is_the_one_measured_before_the_cut_off(shared_data: Path) -> None:
    """The spread and dispersion defaults match their computation on the windows before the cut-off
    (replays the test drives once, cached)."""
    if not (shared_data / SURVIVAL_FILE).is_file():
        pytest.skip(f"{shared_data / SURVIVAL_FILE} not found: the Backblaze survival table is needed")
    cache = Path(__file__).resolve().parents[2] / ".local" / "cache"
    probes = fb.cached_probes(shared_data, cache, fb.windows_in_data(), fb.HISTORY_WINDOWS)
    registry = read_registry(SHIPPED_REGISTRY)
    scorer = load_artifact(registry, SHIPPED_REGISTRY, registry.champions[Component.DISK.value])
    starts = fb.window_starts(fb.windows_in_data(), fb.HISTORY_WINDOWS)
    outcomes = fb.window_outcomes(probes, scorer.predict(probes.features.astype(float), 30), starts, DISK_ODDS_FACTOR)
    before = [c for c in fb.window_counts(outcomes, starts) if c.end <= starts[fb.HISTORY_WINDOWS]]
    measured = fb.prior_from_history(before)
    assert measured.spread_shape == pytest.approx(CalibrationPrior().spread_shape, abs=0.01)
    assert measured.dispersion == pytest.approx(CalibrationPrior().dispersion, abs=0.001)

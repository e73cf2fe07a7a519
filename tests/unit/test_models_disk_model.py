"""The stacked disk model: tie-free and monotone in the error counters, honest out-of-fold scores."""

from __future__ import annotations

import itertools

import numpy as np

from fleetpulse.models.disk_model import _nonnegative_logit, counter_inputs
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.training import TrainingSet, fit_calibrated


def drives(n: int = 4000, seed: int = 0) -> TrainingSet:
    """Failure odds rise with SMART 5 and 197; most drives are clean, as in real fleets."""
    rng = np.random.default_rng(seed)
    x = np.full((n, len(DISK_FEATURES)), np.nan)
    smart5 = rng.poisson(0.2, n) * rng.integers(1, 40, n)
    smart197 = rng.poisson(0.05, n) * rng.integers(1, 10, n)
    for name, values in (("smart_5", smart5), ("smart_197", smart197)):
        x[:, DISK_FEATURES.index(name)] = values
        x[:, DISK_FEATURES.index(f"{name}_delta_30d")] = 0.0
    x[:, DISK_FEATURES.index("power_on_hours")] = rng.uniform(0, 40_000, n)
    odds = 0.005 + 0.1 * (smart5 > 0) + 0.3 * (smart197 > 0)
    y = (rng.random(n) < odds).astype(float)
    return TrainingSet(x, y, np.ones(n), np.arange(n) // 4)


def one_drive(**values: float) -> np.ndarray:
    row = np.full((1, len(DISK_FEATURES)), np.nan)
    for name in ("smart_5", "smart_197", "smart_5_delta_30d", "smart_197_delta_30d"):
        row[0, DISK_FEATURES.index(name)] = 0.0
    for name, value in values.items():
        row[0, DISK_FEATURES.index(name)] = value
    return row


def test_any_error_counter_ranks_above_a_clean_drive_and_risk_never_falls_as_counters_grow() -> None:
    model = fit_calibrated(drives(), seed=0)
    clean = model.predict_proba(one_drive())[0, 1]
    ladder = [model.predict_proba(one_drive(smart_5=v))[0, 1] for v in (1, 2, 5, 20, 200, 5000)]
    assert clean < ladder[0]
    assert all(a <= b for a, b in itertools.pairwise(ladder))
    assert ladder[0] < ladder[-1]
    assert 0.0 < clean < 1.0


def test_out_of_fold_scores_cover_only_drives_the_folds_held_out() -> None:
    data = drives(2000)
    extra = data.features[:50]
    groups = np.concatenate([data.groups[:40], np.full(10, 10**6)])  # the last ten drives were never fitted
    model = fit_calibrated(data, seed=0, also_score=(extra, groups))
    oof = model.oof_also_
    assert np.isfinite(oof[:40]).all()
    assert ((oof[:40] > 0) & (oof[:40] < 1)).all()
    assert np.isnan(oof[40:]).all()


def test_negative_weights_are_dropped_not_kept() -> None:
    rng = np.random.default_rng(1)
    good = rng.normal(size=3000)
    bad = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(2 * good - 2 * bad)))).astype(float)
    coef, _ = _nonnegative_logit(np.column_stack([good, bad, np.zeros(3000)]), y, np.ones(3000), 1.0)
    assert coef[0] > 0
    assert coef[1] == 0.0
    assert coef[2] == 0.0


def test_unreported_counters_count_as_zero_errors() -> None:
    row = np.full((1, len(DISK_FEATURES)), np.nan)
    assert (counter_inputs(row) == 0).all()
    row[0, DISK_FEATURES.index("smart_198")] = 3
    inputs = counter_inputs(row)[0]
    assert inputs[-2] == 1.0
    assert inputs[-1] == 1.0


def test_counter_score_breaks_the_trees_ties_even_without_stack_weight() -> None:
    model = fit_calibrated(drives(), seed=0)
    model.stack_coef_ = np.array([model.stack_coef_[0], 0.0])
    p = [model.predict_proba(one_drive(smart_5=v))[0, 1] for v in (0, 1)]
    assert p[0] < p[1]
    trees_only = fit_calibrated(drives(), seed=0, stack_counters=False)
    assert trees_only.predict_proba(one_drive(smart_5=1))[0, 1] > 0

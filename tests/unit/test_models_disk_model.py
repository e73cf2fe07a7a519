"""The disk model: tie-free and monotone in the error counters, counter weight chosen by the
objective, honest out-of-fold scores."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from fleetpulse.models.disk_model import AGE_OPTIONS, COUNTER_WEIGHTS, DiskRiskModel, _nonnegative_logit, counter_inputs
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


def ranking_by(y: np.ndarray) -> Callable[[np.ndarray], float]:
    """A stand-in for the pipeline's drive-level objective: average precision of the scores."""
    return lambda score: float(average_precision_score(y, score))


def fit_chosen(data: TrainingSet, seed: int = 0) -> DiskRiskModel:
    """The default grid, counter weight chosen on the fit rows' own out-of-fold scores."""
    return fit_calibrated(data, seed, also_score=(data.features, data.groups), objective=ranking_by(data.y))


def one_drive(**values: float) -> np.ndarray:
    row = np.full((1, len(DISK_FEATURES)), np.nan)
    for name in ("smart_5", "smart_197", "smart_5_delta_30d", "smart_197_delta_30d"):
        row[0, DISK_FEATURES.index(name)] = 0.0
    for name, value in values.items():
        row[0, DISK_FEATURES.index(name)] = value
    return row


@pytest.mark.parametrize("weight", [COUNTER_WEIGHTS[0], COUNTER_WEIGHTS[-1]])
def test_any_error_counter_ranks_above_a_clean_drive_and_risk_never_falls_as_counters_grow(weight: float) -> None:
    model = fit_calibrated(drives(), seed=0, counter_weights=(weight,), age_options=(False,))
    clean = model.predict_proba(one_drive())[0, 1]
    ladder = [model.predict_proba(one_drive(smart_5=v))[0, 1] for v in (1, 2, 5, 20, 200, 5000)]
    growth = [model.predict_proba(one_drive(smart_5=20, smart_5_delta_30d=v))[0, 1] for v in (0, 1, 10, 100)]
    assert clean < ladder[0]
    assert all(a <= b for a, b in itertools.pairwise(ladder))
    assert all(a <= b for a, b in itertools.pairwise(growth))
    assert ladder[0] < ladder[-1]
    assert 0.0 < clean < 1.0
    assert model.calibration_slope_ > 0


def test_out_of_fold_scores_cover_every_row_from_a_model_that_did_not_fit_its_drive() -> None:
    data = drives(2000)
    extra = data.features[:50]
    groups = np.concatenate([data.groups[:40], np.full(10, 10**6)])  # the last ten drives were never fitted
    model = fit_calibrated(data, seed=0, also_score=(extra, groups), counter_weights=(1.0,), age_options=(False,))
    oof = model.oof_also_
    assert ((oof > 0) & (oof < 1)).all()
    in_sample = model.predict_proba(extra)[:, 1]
    assert not np.allclose(oof[:40], in_sample[:40])  # the fold models, not the final fit


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


def test_the_tie_break_orders_drives_the_trees_put_in_one_leaf_even_without_the_counter_score() -> None:
    trees_only = fit_calibrated(drives(), seed=0, counter_weights=(0.0,), age_options=(False,))
    rows = [one_drive(smart_197=v) for v in (3, 9, 30)]  # the trees put these in one leaf
    leaf = {float(trees_only.trees_.decision_function(trees_only._tree_input(r))[0]) for r in rows}
    assert len(leaf) == 1
    p = [trees_only.predict_proba(r)[0, 1] for r in rows]
    assert p[0] < p[1] < p[2]
    assert not trees_only.linear_coef_.any()
    assert trees_only.predict_proba(one_drive(smart_5=1))[0, 1] > trees_only.predict_proba(one_drive())[0, 1]


def test_the_counter_weight_is_the_grid_point_the_objective_scores_best() -> None:
    data = drives(2000)
    # without age, then with age; the first best (with age, third weight) wins a tie
    values = iter([0.1, 0.5, 0.2, 0.2, 0.3, 0.3, 0.1, 0.5, 0.9, 0.2, 0.9, 0.3])
    seen: list[np.ndarray] = []

    def objective(score: np.ndarray) -> float:
        seen.append(score)
        return next(values)

    model = fit_calibrated(data, seed=0, also_score=(data.features, data.groups), objective=objective)
    assert len(seen) == 2 * len(COUNTER_WEIGHTS)
    assert model.counter_weight_ == COUNTER_WEIGHTS[2]
    assert model.age_ is True
    assert model.objective_values_.shape == (2, len(COUNTER_WEIGHTS))
    assert all(s.shape == (len(data.y),) and np.isfinite(s).all() for s in seen)
    described = model.describe()
    assert described["counter_weight"] == COUNTER_WEIGHTS[2]
    assert described["age_used"] is True
    assert described["objective_per_counter_weight"]["age, w=0.3"] == 0.9


def test_a_real_ranking_objective_gives_the_counter_score_weight() -> None:
    """Where the counters carry the signal, average precision prefers some counter weight over
    the tie-break-only weight, and the choice is reproducible from the seed."""
    model = fit_chosen(drives())
    assert model.counter_weight_ in COUNTER_WEIGHTS
    chosen = (AGE_OPTIONS.index(model.age_), COUNTER_WEIGHTS.index(model.counter_weight_))
    assert model.objective_values_[chosen] == model.objective_values_.max()
    again = fit_chosen(drives())
    assert again.counter_weight_ == model.counter_weight_
    x = drives(500, seed=3).features
    np.testing.assert_array_equal(model.predict_proba(x), again.predict_proba(x))


def test_several_weights_need_an_objective_and_weights_cannot_be_negative() -> None:
    data = drives(500)
    with pytest.raises(ValueError, match="objective"):
        fit_calibrated(data, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        fit_calibrated(data, seed=0, counter_weights=(-1.0,), age_options=(False,))


def test_an_artifact_from_before_the_counter_weight_loads_as_the_same_function() -> None:
    model = fit_calibrated(drives(1500), seed=0, counter_weights=(0.5,), age_options=(False,))
    state = model.__getstate__()
    for name in ("counter_weights", "counter_weight_", "objective_values_"):
        del state[name]
    slope, intercept = state.pop("calibration_slope_"), state.pop("calibration_intercept_")
    tie_break = 1e-4
    state |= {
        "stack_coef_": np.array([slope, 0.5 * slope - tie_break]),
        "stack_intercept_": intercept,
        "tie_break": tie_break,
        "stack_counters": True,
    }
    old = DiskRiskModel.__new__(DiskRiskModel)
    old.__setstate__(state)
    x = drives(300, seed=4).features
    np.testing.assert_allclose(old.predict_proba(x), model.predict_proba(x), rtol=1e-12)
    assert old.describe()["counter_weight"] == pytest.approx(0.5)


def test_probabilities_follow_the_recent_failure_rate_but_the_fitted_scores_do_not_change() -> None:
    from dataclasses import replace

    from fleetpulse.models.training import CALIBRATION_DAYS, recent_rows

    # the same drives, but failures at a flagged count became three times as likely in the last months
    data = drives(8000, seed=3)
    day = np.linspace(0.0, 720.0, len(data.y))
    recent = recent_rows(day)
    assert recent.mean() == pytest.approx(CALIBRATION_DAYS / 720.0, abs=0.01)
    rng = np.random.default_rng(1)
    flagged = counter_inputs(data.features)[:, 0] > 0
    y = np.where(recent & flagged & (rng.random(len(data.y)) < 0.2), 1.0, data.y)
    whole = fit_calibrated(replace(data, y=y), seed=0, counter_weights=(1.0,), age_options=(False,))
    latest = fit_calibrated(replace(data, y=y, day=day), seed=0, counter_weights=(1.0,), age_options=(False,))
    rows = data.features[recent & flagged]
    assert latest.predict_proba(rows)[:, 1].mean() > whole.predict_proba(rows)[:, 1].mean()
    assert latest.predict_proba(rows)[:, 1].mean() == pytest.approx(y[recent & flagged].mean(), abs=0.05)
    # only the calibration (and the bad-sector floor) follow the recent rate; the scores they map do not
    np.testing.assert_array_equal(latest.linear_coef_, whole.linear_coef_)
    x = latest._tree_input(data.features)
    np.testing.assert_array_equal(latest.trees_.decision_function(x), whole.trees_.decision_function(x))


def test_calibration_rows_without_a_failure_are_refused() -> None:
    data = drives()
    with pytest.raises(ValueError, match="both failures and healthy"):
        DiskRiskModel(
            fit_calibrated(data, seed=0, counter_weights=(1.0,), age_options=(False,)).trees,
            counter_weights=(1.0,),
            age_options=(False,),
        ).fit(data.features, data.y, groups=data.groups, calibration_rows=data.y == 0)


def test_the_sector_alarm_lifts_only_drives_with_a_thousand_bad_sectors_and_keeps_risk_monotone() -> None:
    model = fit_calibrated(drives(1500), seed=0, counter_weights=(0.5,), age_options=(False,))
    ladder = [one_drive(smart_5=v) for v in (0, 10, 999, 1000, 5000)] + [one_drive(smart_197=1000)]
    before = np.array([model.predict_proba(x)[0, 1] for x in ladder])
    alarm = (float(before.max()) + 1.0) / 2
    model.set_sector_alarm(alarm)
    after = np.array([model.predict_proba(x)[0, 1] for x in ladder])
    np.testing.assert_array_equal(after[:3], before[:3])  # under 1,000 bad sectors nothing changes
    assert (after[3:] >= alarm).all()  # 1,000 reallocated or pending sectors: at least the alarm
    assert all(a <= b for a, b in itertools.pairwise(after[:5]))
    assert model.describe()["sector_alarm"] == {"sectors": 1000, "probability": alarm}
    state = model.__getstate__()
    del state["sector_alarm_"]  # an artifact from before the sector alarm serves without it
    old = DiskRiskModel.__new__(DiskRiskModel)
    old.__setstate__(state)
    np.testing.assert_allclose([old.predict_proba(x)[0, 1] for x in ladder], before, rtol=1e-12)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="sector alarm"):
            model.set_sector_alarm(bad)

"""The disk failure model: monotone trees plus a weighted monotone counter score, calibrated.

Why not trees alone: boosted trees with a few hundred failures put most drives into a
handful of leaves, so thousands of healthy drives share one score -- a drive with one
reallocated sector scores exactly like a clean one. Thresholds in that tail then jump
from a few per cent of false alarms straight to "every drive", and the model cannot be
compared with (or beat) Backblaze's rule at the rule's own false-alarm rate.

So two monotone scorers see the same serving feature vector:

* the trees (:class:`~sklearn.ensemble.HistGradientBoostingClassifier`, monotone in
  the error counters) find interactions and growth patterns;
* a logistic regression on ``log1p`` of the error counters, their 30-day growth, the
  Backblaze flag ("any of SMART 5/187/188/197/198 raw > 0") and the number of such
  counters above zero, with only non-negative weights kept -- smooth, so every extra
  error ranks a drive higher and no two drives with different counters tie.

The ranking score is ``z = tree logit + w * counter score``. Log-loss barely notices the
order inside the tail (on 2013-2016 it gave the counter score weight 0), yet that order is
what alert thresholds cut, so ``w`` is chosen from the fixed grid ``counter_weights`` by
a ranking objective the caller supplies, evaluated on out-of-fold scores (folds grouped by
drive) -- in the pipeline, mean drive-level detection over false-alarm rates up to the
Backblaze rule's rate on the training drives. Every grid weight is > 0 by default, so the
counter score always orders drives the trees put in one leaf. A 1-D logistic on the
out-of-fold ``z`` (slope kept >= 0) then makes it a probability. Every step is
non-decreasing in each error counter, so the probability itself is the ranking score:
thresholds, alerts and the evaluation all use the same number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from fleetpulse.models.features import DISK_FEATURES, GROWTH_COUNTERS, backblaze_flags

# 1e-4: the trees decide, the counter score only breaks their ties; up to 10: it dominates
COUNTER_WEIGHTS: tuple[float, ...] = (1e-4, 0.1, 0.3, 1.0, 3.0, 10.0)
_COUNTER_COLUMNS = [DISK_FEATURES.index(name) for name in GROWTH_COUNTERS]
_GROWTH_COLUMNS = [DISK_FEATURES.index(f"{name}_delta_30d") for name in GROWTH_COUNTERS]
LINEAR_INPUTS: tuple[str, ...] = (
    *(f"log1p {name}" for name in GROWTH_COUNTERS),
    *(f"log1p {name} growth 30d" for name in GROWTH_COUNTERS),
    "any of SMART 5/187/188/197/198 > 0",
    "count of SMART 5/187/188/197/198 > 0",
)


def counter_inputs(features: np.ndarray) -> np.ndarray:
    """The linear scorer's inputs; a counter the drive does not report counts as zero errors."""
    counters = np.clip(np.nan_to_num(features[:, _COUNTER_COLUMNS].astype(float), nan=0.0), 0.0, None)
    growth = np.clip(np.nan_to_num(features[:, _GROWTH_COLUMNS].astype(float), nan=0.0), 0.0, None)
    flagged = backblaze_flags(features)
    return np.column_stack(
        [np.log1p(counters), np.log1p(growth), flagged.any(axis=1).astype(float), flagged.sum(axis=1).astype(float)]
    )


def _nonnegative_logit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Logistic regression whose weights are all >= 0: inputs that get a negative weight
    (or never vary) are dropped and the rest refitted (risk may never fall because an
    error counter rose)."""
    keep = np.ptp(x, axis=0) > 0
    coef = np.zeros(x.shape[1])
    prevalence = min(max(float(np.average(y, weights=weight)), 1e-12), 1 - 1e-12)
    intercept = float(np.log(prevalence / (1 - prevalence)))
    while keep.any():
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x[:, keep], y, sample_weight=weight)
        fitted = model.coef_[0]
        if (fitted >= 0).all():
            coef = np.zeros(x.shape[1])
            coef[keep] = fitted
            intercept = float(model.intercept_[0])
            break
        keep[np.flatnonzero(keep)[fitted < 0]] = False
    return coef, intercept


class DiskRiskModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated disk failure classifier over the full serving feature vector.

    ``excluded`` features are set to a constant before the trees see them (they cannot
    split on them); columns the training data never carries are treated the same way.
    ``counter_weights`` is the grid ``w`` is chosen from; ``(0.0,)`` gives the trees alone,
    Platt-calibrated (the comparison the counter score must beat).
    """

    def __init__(
        self,
        trees: HistGradientBoostingClassifier | None = None,
        excluded: tuple[str, ...] = (),
        n_splits: int = 3,
        linear_c: float = 1.0,
        counter_weights: tuple[float, ...] = COUNTER_WEIGHTS,
    ) -> None:
        self.trees = trees
        self.excluded = excluded
        self.n_splits = n_splits
        self.linear_c = linear_c
        self.counter_weights = counter_weights

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Artifacts fitted before the counter weight was chosen (a two-input calibration
        ``a * trees + (b + tie_break) * counter score + c``, still served as challengers)
        load as the same function in the current form: slope ``a``, weight ``(b + tie_break) / a``."""
        if "stack_coef_" in state:
            (a, b), c = state.pop("stack_coef_"), state.pop("stack_intercept_")
            weight = b + (state.pop("tie_break") if state.pop("stack_counters") else 0.0)
            if a <= 0:
                raise ValueError("an artifact whose calibration dropped the trees cannot be converted")
            state["counter_weights"] = (float(weight / a),)
            state["counter_weight_"] = float(weight / a)
            state["objective_values_"] = np.full(1, np.nan)
            state["calibration_slope_"], state["calibration_intercept_"] = float(a), float(c)
        super().__setstate__(state)

    def _tree_input(self, features: np.ndarray) -> np.ndarray:
        x = np.array(features, dtype=float)
        x[:, self.blank_columns_] = 0.0
        return x

    def _fit_parts(
        self, x: np.ndarray, lin: np.ndarray, y: np.ndarray, w: np.ndarray
    ) -> tuple[HistGradientBoostingClassifier, np.ndarray, float]:
        from sklearn.base import clone

        trees = clone(self.trees)
        trees.fit(x, y, sample_weight=w)
        if not any(self.counter_weights):
            return trees, np.zeros(lin.shape[1]), 0.0
        coef, intercept = _nonnegative_logit(lin, y, w, self.linear_c)
        return trees, coef, intercept

    def fit(
        self,
        features: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        also_score: tuple[np.ndarray, np.ndarray] | None = None,
        objective: Callable[[np.ndarray], float] | None = None,
        calibration_rows: np.ndarray | None = None,
    ) -> DiskRiskModel:
        """Fit; ``also_score=(features, groups)`` rows get out-of-fold probabilities in
        ``oof_also_`` -- honest training-side scores for choosing alert thresholds. A row's
        group is scored by the fold that held it out; groups the fit set lacks entirely
        (e.g. drives whose negatives were all subsampled away) by the first fold, which did
        not see them either. ``objective`` maps out-of-fold ranking scores of those rows to a
        number to maximise; it picks the counter weight (first best in grid order) and is
        required when the grid has several. ``calibration_rows`` (a mask over the rows)
        restricts the probability calibration to them, e.g. the most recent instants."""
        grid = np.asarray(self.counter_weights, dtype=float)
        if grid.size == 0 or (grid < 0).any():
            raise ValueError("counter_weights must be a non-empty grid of weights >= 0")
        if grid.size > 1 and (objective is None or also_score is None):
            raise ValueError("choosing among several counter weights needs also_score rows and an objective")
        features = np.asarray(features, dtype=float)
        y = np.asarray(y, dtype=float)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        g = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.array([0.0, 1.0])
        self.blank_columns_ = np.isnan(features).all(axis=0)
        for name in self.excluded:
            self.blank_columns_[DISK_FEATURES.index(name)] = True
        x, lin = self._tree_input(features), counter_inputs(features)
        oof = np.zeros((len(y), 2))  # columns: tree logit, counter score
        extra, extra_groups = also_score if also_score is not None else (np.empty((0, x.shape[1])), np.empty(0))
        also = np.full((len(extra), 2), np.nan)
        never_fitted = ~np.isin(extra_groups, g)
        for fold, (fit_rows, held_rows) in enumerate(GroupKFold(n_splits=self.n_splits).split(x, y, g)):
            trees, coef, intercept = self._fit_parts(x[fit_rows], lin[fit_rows], y[fit_rows], w[fit_rows])
            oof[held_rows] = np.column_stack([trees.decision_function(x[held_rows]), lin[held_rows] @ coef + intercept])
            if len(extra):
                rows = np.isin(extra_groups, np.unique(g[held_rows])) | (never_fitted & (fold == 0))
                if rows.any():
                    also[rows] = np.column_stack(
                        [
                            trees.decision_function(self._tree_input(extra[rows])),
                            counter_inputs(extra[rows]) @ coef + intercept,
                        ]
                    )
        self.objective_values_ = np.full(grid.size, np.nan)
        if objective is not None and also_score is not None:
            self.objective_values_ = np.array([objective(also[:, 0] + weight * also[:, 1]) for weight in grid])
        self.counter_weight_ = float(grid[int(np.argmax(self.objective_values_))] if grid.size > 1 else grid[0])
        cal = np.ones(len(y), dtype=bool) if calibration_rows is None else np.asarray(calibration_rows, dtype=bool)
        if len(np.unique(y[cal])) < 2:
            raise ValueError("the calibration rows must hold both failures and healthy instants")
        slope, self.calibration_intercept_ = _nonnegative_logit(
            (oof[cal, 0] + self.counter_weight_ * oof[cal, 1])[:, None], y[cal], w[cal], 1e4
        )
        self.calibration_slope_ = float(slope[0])
        self.trees_, self.linear_coef_, self.linear_intercept_ = self._fit_parts(x, lin, y, w)
        if also_score is not None:
            self.oof_also_ = self._combine(also[:, 0], also[:, 1])
        return self

    def _combine(self, tree_score: np.ndarray, linear_score: np.ndarray) -> np.ndarray:
        z = tree_score + self.counter_weight_ * linear_score
        out: np.ndarray = 1.0 / (1.0 + np.exp(-(self.calibration_slope_ * z + self.calibration_intercept_)))
        return out

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        p = self.predict_proba(features)[:, 1]
        out: np.ndarray = np.log(p) - np.log1p(-p)
        return out

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=float)
        tree_score = self.trees_.decision_function(self._tree_input(features))
        linear_score = counter_inputs(features) @ self.linear_coef_ + self.linear_intercept_
        p = self._combine(tree_score, linear_score)
        return np.column_stack([1.0 - p, p])

    def predict(self, features: np.ndarray) -> np.ndarray:
        out: np.ndarray = (self.predict_proba(features)[:, 1] >= 0.5).astype(float)
        return out

    def describe(self) -> dict[str, Any]:
        """The fitted weights in words (for the artifact metadata and the report)."""
        return {
            "score": "trees logit + counter_weight * counter score",
            "counter_weight": self.counter_weight_,
            "objective_per_counter_weight": {
                f"{weight:g}": (None if np.isnan(value) else float(value))
                for weight, value in zip(self.counter_weights, self.objective_values_, strict=True)
            },
            "calibration": {"slope": self.calibration_slope_, "intercept": self.calibration_intercept_},
            "counter_score_inputs": {
                name: float(c) for name, c in zip(LINEAR_INPUTS, self.linear_coef_, strict=True) if c > 0
            },
        }

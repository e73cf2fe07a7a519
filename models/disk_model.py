"""The disk failure model: monotone trees stacked with a monotone counter score, calibrated together.

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
  error ranks a drive higher and no two drives with different counters tie;

and a two-input logistic calibration fitted on their out-of-fold scores (folds grouped by
drive) turns both into one probability. The calibration optimises log-loss, which barely
notices the order inside the tail, so it may give the counter score little or no weight;
the counter score therefore also breaks the trees' ties: ``tie_break`` (1e-4) times it is
added to the calibrated logit (a parameter, so it is part of the artifact's content and version) -- far below any calibration error, but it orders drives the
trees put in one leaf (more and growing errors first). Every step is non-decreasing in
each input, so the probability itself is the ranking score: thresholds, alerts and the
evaluation all use the same number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from fleetpulse.models.features import DISK_FEATURES, GROWTH_COUNTERS, backblaze_flags

TIE_BREAK = 1e-4
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
    """Stacked, calibrated disk failure classifier over the full serving feature vector.

    ``excluded`` features are set to a constant before the trees see them (they cannot
    split on them); columns the training data never carries are treated the same way.
    """

    def __init__(
        self,
        trees: HistGradientBoostingClassifier | None = None,
        excluded: tuple[str, ...] = (),
        n_splits: int = 3,
        linear_c: float = 1.0,
        stack_counters: bool = True,
        tie_break: float = TIE_BREAK,
    ) -> None:
        self.trees = trees
        self.excluded = excluded
        self.n_splits = n_splits
        self.linear_c = linear_c
        self.stack_counters = stack_counters
        self.tie_break = tie_break

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
        if not self.stack_counters:
            # trees alone, Platt-calibrated: the comparison the counter score must beat
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
    ) -> DiskRiskModel:
        """Fit; with ``also_score=(features, groups)`` those rows get out-of-fold
        probabilities in ``oof_also_`` (rows of a group not in the fit set stay NaN) --
        honest training-side scores for choosing alert thresholds."""
        features = np.asarray(features, dtype=float)
        y = np.asarray(y, dtype=float)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        g = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.array([0.0, 1.0])
        self.blank_columns_ = np.isnan(features).all(axis=0)
        for name in self.excluded:
            self.blank_columns_[DISK_FEATURES.index(name)] = True
        x, lin = self._tree_input(features), counter_inputs(features)
        oof = np.zeros((len(y), 2))
        fold_parts = []
        folds = list(GroupKFold(n_splits=self.n_splits).split(x, y, g))
        for fit_rows, held_rows in folds:
            trees, coef, intercept = self._fit_parts(x[fit_rows], lin[fit_rows], y[fit_rows], w[fit_rows])
            oof[held_rows, 0] = trees.decision_function(x[held_rows])
            oof[held_rows, 1] = lin[held_rows] @ coef + intercept
            fold_parts.append((np.unique(g[held_rows]), trees, coef, intercept))
        self.stack_coef_, self.stack_intercept_ = _nonnegative_logit(oof, y, w, 1e4)
        self.trees_, self.linear_coef_, self.linear_intercept_ = self._fit_parts(x, lin, y, w)
        if also_score is not None:
            extra, extra_groups = also_score
            self.oof_also_ = np.full(len(extra), np.nan)
            for held_groups, trees, coef, intercept in fold_parts:
                rows = np.isin(extra_groups, held_groups)
                if rows.any():
                    self.oof_also_[rows] = self._combine(
                        trees.decision_function(self._tree_input(extra[rows])),
                        counter_inputs(extra[rows]) @ coef + intercept,
                    )
        return self

    def _combine(self, tree_score: np.ndarray, linear_score: np.ndarray) -> np.ndarray:
        weight = self.stack_coef_[1] + (self.tie_break if self.stack_counters else 0.0)
        z = self.stack_coef_[0] * tree_score + weight * linear_score + self.stack_intercept_
        out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
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
        """The fitted weights in words (for the artifact metadata)."""
        return {
            "stack": {"trees": float(self.stack_coef_[0]), "counters": float(self.stack_coef_[1])},
            "counter_weights": {
                name: float(c) for name, c in zip(LINEAR_INPUTS, self.linear_coef_, strict=True) if c > 0
            },
        }

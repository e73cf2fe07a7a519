"""The disk failure model: monotone trees on drive-model-invariant inputs plus a weighted
monotone counter score, calibrated.

Most drives a municipal fleet scores are of models absent from the training data, so the
trees see only inputs that mean the same on every drive model (:func:`tree_inputs`):
``log1p`` of the error counters (SMART 5/187/188/197/198, NVMe media errors), of their 7-
and 30-day growth, the largest counter and growth, how many counters are above zero, and
optionally the power-on hours. Nothing that identifies the model (capacity, temperature,
which attributes it reports -- an unreported counter counts as zero) reaches them. Every
input is constrained monotone increasing, so risk never falls because a counter or its
growth rose, and a large count seen on a drive's very first report counts as much as the
same count reached by growth.

Why not trees alone: boosted trees with a few hundred failures put most drives into a
handful of leaves, so thousands of healthy drives share one score. So a logistic
regression on ``log1p`` of the error counters, their 30-day growth, the Backblaze flag and
the number of flagged counters, with only non-negative weights kept, is added with weight
``w``; and a fixed tiny tie-break (``TIE_BREAK`` x the summed ``log1p`` counters and
30-day growth, NVMe critical warning included) makes every extra error or growth rank a
drive strictly higher, also for counters the training data never carried.

A drive first seen with a large bad-sector count has no growth yet, and in training large
counts nearly always come with growth, so the trees rate such a drive low. The probability is
therefore at least a *bad-sector floor*: a non-negative logistic in ``log1p`` of the largest
of SMART 5/197/198 alone -- the failure rate that count implies, whatever its history. And a
drive with ``ALARM_SECTORS`` or more scores at least the *sector alarm*, set to the highest
stored alert threshold, so it is ticketed at every cap while the caps keep their own thresholds.

The ranking score is ``z = tree logit + w * counter score (+ TIE_BREAK * tie-break)``. ``w``
and whether age is used are chosen jointly from fixed grids by a ranking objective the
caller supplies, evaluated on out-of-fold scores whose folds are grouped by the caller's
``groups`` -- drive models in the pipeline, so the choice is a leave-model-out inner
validation on training drives. A 1-D logistic on the out-of-fold ``z`` (slope kept >= 0)
makes it a probability; its logit, raised to the floor's, plus the tie-break is served. Every step is non-decreasing in each error counter, so the
probability itself is the ranking score: thresholds, alerts and the evaluation all use
the same number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from fleetpulse.models import forest
from fleetpulse.models.features import BACKBLAZE_COUNTERS, DISK_FEATURES, GROWTH_COUNTERS

# 1e-4: the trees decide, the counter score only breaks their ties; up to 10: it dominates
COUNTER_WEIGHTS: tuple[float, ...] = (1e-4, 0.1, 0.3, 1.0, 3.0, 10.0)
AGE_OPTIONS: tuple[bool, ...] = (False, True)
TIE_BREAK = 1e-3
ALARM_SECTORS = 1_000
"""A drive reporting this many reallocated, pending or offline-uncorrectable sectors scores at
least the sector alarm (:meth:`DiskRiskModel.set_sector_alarm`), from its first report on: that
much surface damage needs a ticket whatever the history. Well under 1 % of healthy drives reach it."""
"""Logit per unit of the tie-break sum: far below any tree step, yet every extra error ranks higher."""
ERROR_COUNTERS: tuple[str, ...] = ("smart_5", "smart_187", "smart_188", "smart_197", "smart_198", "media_errors")
_COUNTER_COLUMNS = [DISK_FEATURES.index(name) for name in GROWTH_COUNTERS]
_GROWTH_COLUMNS = [DISK_FEATURES.index(f"{name}_delta_30d") for name in GROWTH_COUNTERS]
_ERROR_COLUMNS = [DISK_FEATURES.index(name) for name in ERROR_COUNTERS]
_ERROR_GROWTH_7D = [DISK_FEATURES.index(f"{name}_delta_7d") for name in ERROR_COUNTERS]
_ERROR_GROWTH_30D = [DISK_FEATURES.index(f"{name}_delta_30d") for name in ERROR_COUNTERS]
_AGE_COLUMN = DISK_FEATURES.index("power_on_hours")
_SECTOR_COLUMNS = [DISK_FEATURES.index(name) for name in ("smart_5", "smart_197", "smart_198")]
_CRITICAL_COLUMN = DISK_FEATURES.index("critical_warning")
LINEAR_INPUTS: tuple[str, ...] = (
    *(f"log1p {name}" for name in GROWTH_COUNTERS),
    *(f"log1p {name} growth 30d" for name in GROWTH_COUNTERS),
    "any of SMART 5/187/188/197/198 > 0",
    "count of SMART 5/187/188/197/198 > 0",
)
TREE_INPUTS: tuple[str, ...] = (
    *(f"log1p {name}" for name in ERROR_COUNTERS),
    *(f"log1p {name} growth 7d" for name in ERROR_COUNTERS),
    *(f"log1p {name} growth 30d" for name in ERROR_COUNTERS),
    "log1p largest error counter",
    "log1p largest 30-day growth",
    "error counters above zero",
    "power-on hours (only when age is used)",
)


_LARGEST = float(np.finfo(float).max)


def _columns(*groups: list[int]) -> np.ndarray:
    """Column indices as an index array: numpy converts a list on every indexing, which costs
    more than the indexing itself at the few rows a stream worker's call scores."""
    out: np.ndarray = np.array([c for group in groups for c in group], dtype=np.intp)
    return out


def _nonnegative(features: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Counts as the model reads them: unreported (NaN) is zero errors, a reset is no growth,
    an infinite count the largest float -- ``np.clip(np.nan_to_num(x, nan=0.0), 0.0, None)``
    value for value, without the cost of those wrappers."""
    x = features[:, columns].astype(float, copy=False)  # training passes float32 replays
    out: np.ndarray = np.where(x > 0.0, np.minimum(x, _LARGEST), 0.0)
    return out


LOG_STEP, LOG_CAP = 1 / 16, 15.0
AGE_STEP_HOURS, AGE_CAP_HOURS = 500.0, 100_000.0


def _floored(x: np.ndarray, step: float, cap: float) -> np.ndarray:
    """``x`` capped and floored to a grid (non-decreasing, so monotonicity survives): at most
    241 distinct values, so the trees bin them exactly instead of by weighted percentiles,
    which dominated fit time."""
    out: np.ndarray = np.floor(np.minimum(x, cap) / step) * step
    return out


# Each input function cleans all the columns it reads in one pass. Its parts are column blocks
# of a column-major matrix, laid out as the separate per-block arrays were, so every reduction
# and the linear score's matrix product add in the same order.
_ERRORS = len(ERROR_COUNTERS)
_TREE_COLUMNS = _columns(_ERROR_COLUMNS, _ERROR_GROWTH_7D, _ERROR_GROWTH_30D)
_TIE_COLUMNS = _columns(_ERROR_COLUMNS, _ERROR_GROWTH_30D, [_CRITICAL_COLUMN])
_LINEAR_COLUMNS = _columns(_COUNTER_COLUMNS, _GROWTH_COLUMNS)
_SECTORS = _columns(_SECTOR_COLUMNS)
_BACKBLAZE_AMONG_COUNTERS = _columns([list(GROWTH_COUNTERS).index(name) for name in BACKBLAZE_COUNTERS])


def tree_inputs(features: np.ndarray, age: bool) -> np.ndarray:
    """The trees' inputs (``TREE_INPUTS``), each non-decreasing in every error counter and
    its growth (``log1p`` to 1/16, i.e. counts to about 6 %, up to 3 million); the age column
    (power-on hours to 500 h) is constant -- never split on -- unless ``age``."""
    counts = _floored(np.log1p(_nonnegative(features, _TREE_COLUMNS)), LOG_STEP, LOG_CAP)
    level, growth_30d = counts[:, :_ERRORS], counts[:, 2 * _ERRORS :]
    out = np.empty((len(features), len(TREE_INPUTS)), order="F")
    out[:, : 3 * _ERRORS] = counts
    out[:, 3 * _ERRORS] = np.maximum.reduce(level, axis=1)
    out[:, 3 * _ERRORS + 1] = np.maximum.reduce(growth_30d, axis=1)
    out[:, 3 * _ERRORS + 2] = np.add.reduce(level > 0, axis=1)
    out[:, 3 * _ERRORS + 3] = (
        _floored(features[:, _AGE_COLUMN].astype(float), AGE_STEP_HOURS, AGE_CAP_HOURS) if age else 0.0
    )
    return out


def bad_sectors(features: np.ndarray) -> np.ndarray:
    """``log1p`` of the largest bad-sector count (SMART 5 reallocated, 197 pending, 198 offline
    uncorrectable): the floor's input."""
    out: np.ndarray = np.log1p(np.maximum.reduce(_nonnegative(features, _SECTORS), axis=1))
    return out


def tie_break_inputs(features: np.ndarray) -> np.ndarray:
    """Summed ``log1p`` of every error counter, its 30-day growth and the NVMe critical warning."""
    logs = np.log1p(_nonnegative(features, _TIE_COLUMNS))
    level = np.add.reduce(logs[:, :_ERRORS], axis=1)
    growth = np.add.reduce(logs[:, _ERRORS : 2 * _ERRORS], axis=1)
    out: np.ndarray = level + growth + logs[:, 2 * _ERRORS]
    return out


def counter_inputs(features: np.ndarray) -> np.ndarray:
    """The linear scorer's inputs; a counter the drive does not report counts as zero errors."""
    counts = _nonnegative(features, _LINEAR_COLUMNS)
    flagged = counts[:, _BACKBLAZE_AMONG_COUNTERS] > 0  # ``backblaze_flags``: a count above zero
    k = len(_LINEAR_COLUMNS)
    out = np.empty((len(features), k + 2), order="F")
    out[:, :k] = np.log1p(counts)
    out[:, k] = np.logical_or.reduce(flagged, axis=1)
    out[:, k + 1] = np.add.reduce(flagged, axis=1)
    return out


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


_ALARM_LEVEL = np.log1p(ALARM_SECTORS)
"""``bad_sectors`` of a drive at ``ALARM_SECTORS``."""


@functools.lru_cache(maxsize=8)
def _logit(probability: float) -> float:
    """The sector alarm's logit, once per probability rather than once per scoring call."""
    return float(np.log(probability) - np.log1p(-probability))


class DiskRiskModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated disk failure classifier over the full serving feature vector.

    ``trees`` is cloned with every input constrained monotone increasing. ``counter_weights``
    and ``age_options`` are the grids ``w`` and the use of age are chosen from;
    ``counter_weights=(0.0,)`` gives the trees (and the tie-break) alone.
    """

    def __init__(
        self,
        trees: HistGradientBoostingClassifier | None = None,
        n_splits: int = 3,
        linear_c: float = 1.0,
        counter_weights: tuple[float, ...] = COUNTER_WEIGHTS,
        age_options: tuple[bool, ...] = AGE_OPTIONS,
    ) -> None:
        self.trees = trees
        self.n_splits = n_splits
        self.linear_c = linear_c
        self.counter_weights = counter_weights
        self.age_options = age_options

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Artifacts fitted on the raw feature vector (``age_`` absent; still served as
        challengers) keep that input and no tie-break; those fitted before the counter weight
        was chosen (a two-input calibration ``a * trees + (b + tie_break) * counter score + c``)
        load as the same function: slope ``a``, weight ``(b + tie_break) / a``."""
        if "age_" not in state:
            state["age_"], state["tie_break_"], state["floor_coef_"] = None, 0.0, None
            state["age_options"] = (False,)
        state.setdefault("sector_alarm_", None)
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

    def _tree_input(self, features: np.ndarray, age: bool | None = None) -> np.ndarray:
        age = self.age_ if age is None else age
        if age is None:  # an artifact fitted on the raw vector
            x = np.array(features, dtype=float)
            x[:, self.blank_columns_] = 0.0
            return x
        return tree_inputs(np.asarray(features, dtype=float), age)

    def _fit_trees(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> HistGradientBoostingClassifier:
        from sklearn.base import clone

        trees = clone(self.trees).set_params(monotonic_cst=[1] * x.shape[1])
        trees.fit(x, y, sample_weight=w)
        return trees

    def _fit_linear(self, lin: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
        if not any(self.counter_weights):
            return np.zeros(lin.shape[1]), 0.0
        return _nonnegative_logit(lin, y, w, self.linear_c)

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
        number to maximise; it picks the counter weight and the use of age (first best in
        grid order) and is required when the grids offer a choice. ``calibration_rows`` (a
        mask over the rows) restricts the probability calibration to them, e.g. the most
        recent instants."""
        grid = np.asarray(self.counter_weights, dtype=float)
        ages = tuple(self.age_options)
        if grid.size == 0 or (grid < 0).any():
            raise ValueError("counter_weights must be a non-empty grid of weights >= 0")
        if not ages:
            raise ValueError("age_options must offer at least one choice")
        if grid.size * len(ages) > 1 and (objective is None or also_score is None):
            raise ValueError(
                "choosing among several counter weights or age options needs also_score rows and an objective"
            )
        features = np.asarray(features, dtype=float)
        y = np.asarray(y, dtype=float)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        g = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.array([0.0, 1.0])
        lin = counter_inputs(features)
        extra, extra_groups = also_score if also_score is not None else (np.empty((0, features.shape[1])), np.empty(0))
        extra_lin, extra_tie = counter_inputs(extra), TIE_BREAK * tie_break_inputs(extra)
        trees_oof = np.zeros((len(ages), len(y)))
        trees_also = np.full((len(ages), len(extra)), np.nan)
        lin_oof, lin_also = np.zeros(len(y)), np.full(len(extra), np.nan)
        never_fitted = ~np.isin(extra_groups, g)
        for fold, (fit_rows, held_rows) in enumerate(
            GroupKFold(n_splits=min(self.n_splits, len(np.unique(g)))).split(features, y, g)
        ):
            coef, intercept = self._fit_linear(lin[fit_rows], y[fit_rows], w[fit_rows])
            lin_oof[held_rows] = lin[held_rows] @ coef + intercept
            rows = np.isin(extra_groups, np.unique(g[held_rows])) | (never_fitted & (fold == 0))
            lin_also[rows] = extra_lin[rows] @ coef + intercept
            for k, age in enumerate(ages):
                trees = self._fit_trees(tree_inputs(features[fit_rows], age), y[fit_rows], w[fit_rows])
                trees_oof[k, held_rows] = trees.decision_function(tree_inputs(features[held_rows], age))
                if rows.any():
                    trees_also[k, rows] = trees.decision_function(tree_inputs(extra[rows], age))
        self.objective_values_ = np.full((len(ages), grid.size), np.nan)
        if objective is not None and also_score is not None:
            for k in range(len(ages)):
                for j, weight in enumerate(grid):
                    self.objective_values_[k, j] = objective(trees_also[k] + weight * lin_also + extra_tie)
        best = int(np.argmax(self.objective_values_)) if grid.size * len(ages) > 1 else 0
        chosen_age, chosen_weight = divmod(best, grid.size)
        self.age_, self.counter_weight_ = bool(ages[chosen_age]), float(grid[chosen_weight])
        self.tie_break_ = TIE_BREAK
        self.sector_alarm_: float | None = None
        cal = np.ones(len(y), dtype=bool) if calibration_rows is None else np.asarray(calibration_rows, dtype=bool)
        if len(np.unique(y[cal])) < 2:
            raise ValueError("the calibration rows must hold both failures and healthy instants")
        z = trees_oof[chosen_age] + self.counter_weight_ * lin_oof
        slope, self.calibration_intercept_ = _nonnegative_logit(z[cal, None], y[cal], w[cal], 1e4)
        self.calibration_slope_ = float(slope[0])
        floor, self.floor_intercept_ = _nonnegative_logit(bad_sectors(features)[cal, None], y[cal], w[cal], 1e4)
        self.floor_coef_ = float(floor[0])
        self.trees_ = self._fit_trees(tree_inputs(features, self.age_), y, w)
        self.linear_coef_, self.linear_intercept_ = self._fit_linear(lin, y, w)
        if also_score is not None:
            self.oof_also_ = self._combine(
                trees_also[chosen_age] + self.counter_weight_ * lin_also, bad_sectors(extra), extra_tie
            )
        return self

    def floor_probability(self, sectors: float) -> float:
        """The bad-sector floor at ``sectors``: every drive reporting that many bad sectors (or
        more) scores at least this, whatever else it reports."""
        if self.floor_coef_ is None:
            return 0.0
        return float(1.0 / (1.0 + np.exp(-(self.floor_coef_ * np.log1p(sectors) + self.floor_intercept_))))

    def set_sector_alarm(self, probability: float) -> None:
        """Every drive with ``ALARM_SECTORS`` or more bad sectors scores at least ``probability``
        (the highest stored alert threshold: such a drive is ticketed at every cap)."""
        if not 0.0 < probability < 1.0:
            raise ValueError("the sector alarm must be a probability strictly between 0 and 1")
        self.sector_alarm_ = float(probability)

    def _combine(self, z: np.ndarray, sectors: np.ndarray, tie: np.ndarray | float) -> np.ndarray:
        """Probability: the calibrated score, at least the bad-sector floor and, from
        ``ALARM_SECTORS`` on, the sector alarm; plus the tie-break (>= 0)."""
        logit = self.calibration_slope_ * z + self.calibration_intercept_
        if self.floor_coef_ is not None:
            logit = np.maximum(logit, self.floor_coef_ * sectors + self.floor_intercept_)
        alarm_probability: float | None = getattr(self, "sector_alarm_", None)
        if alarm_probability is not None:
            logit = np.where(sectors >= _ALARM_LEVEL, np.maximum(logit, _logit(alarm_probability)), logit)
        out: np.ndarray = 1.0 / (1.0 + np.exp(-(logit + tie)))
        return out

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        p = self.predict_proba(features)[:, 1]
        out: np.ndarray = np.log(p) - np.log1p(-p)
        return out

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=float)
        tree_score = forest.decision_function(self.trees_, self._tree_input(features))
        linear_score = counter_inputs(features) @ self.linear_coef_ + self.linear_intercept_
        tie = self.tie_break_ * tie_break_inputs(features) if self.tie_break_ else 0.0
        p = self._combine(tree_score + self.counter_weight_ * linear_score, bad_sectors(features), tie)
        out = np.empty((len(p), 2))
        out[:, 0], out[:, 1] = 1.0 - p, p
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        out: np.ndarray = (self.predict_proba(features)[:, 1] >= 0.5).astype(float)
        return out

    def describe(self) -> dict[str, Any]:
        """The fitted weights in words (for the artifact metadata and the report)."""
        return {
            "score": "trees logit + counter_weight * counter score + tie_break * tie-break sum",
            "tree_inputs": [name for name in TREE_INPUTS if self.age_ or "age" not in name],
            "age_used": self.age_,
            "counter_weight": self.counter_weight_,
            "tie_break": self.tie_break_,
            "objective_per_counter_weight": {
                f"{'age' if age else 'no age'}, w={weight:g}": (None if np.isnan(value) else float(value))
                for age, row in zip(self.age_options, np.atleast_2d(self.objective_values_), strict=True)
                for weight, value in zip(self.counter_weights, row, strict=True)
            },
            "calibration": {"slope": self.calibration_slope_, "intercept": self.calibration_intercept_},
            "bad_sector_floor": {"coef": self.floor_coef_, "intercept": getattr(self, "floor_intercept_", None)},
            "sector_alarm": {"sectors": ALARM_SECTORS, "probability": getattr(self, "sector_alarm_", None)},
            "counter_score_inputs": {
                name: float(c) for name, c in zip(LINEAR_INPUTS, self.linear_coef_, strict=True) if c > 0
            },
        }

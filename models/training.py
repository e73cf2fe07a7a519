"""Labels, the time-and-drive split, and the calibrated disk failure classifiers.

Protocol (unit = drive serial):

* split by drive: :func:`~fleetpulse.models.data.drive_group` < ``test_fraction`` is a test
  drive, everything else a training drive; never the same drive on both sides;
* split by time: training instants are strictly before ``cutoff`` and their labels are
  censored at ``cutoff`` (nothing after the cut-off is known to training); test
  instants are at or after ``cutoff``;
* label of an instant for horizon H: 1 if the drive failed within H days after it,
  0 if the drive was observed for more than H days after it without failing,
  otherwise censored (NaN) -- drives that leave without failing are never negatives;
* all fitting (classifier, counter weight, calibration, subsampling, the single-attribute
  baseline's choice, alert thresholds) uses training instants only; hyper-parameters and
  the counter-weight grid are fixed in code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score

from fleetpulse.models.data import Instants, drive_group
from fleetpulse.models.disk_model import AGE_OPTIONS, COUNTER_WEIGHTS, DiskRiskModel
from fleetpulse.models.features import DISK_FEATURES, backblaze_flags
from fleetpulse.models.threads import single_thread

HORIZONS = (7, 30)
MAX_NEGATIVES = 60_000
SINGLE_ATTRIBUTE_CANDIDATES = ("smart_5", "smart_187", "smart_188", "smart_197", "smart_198", "smart_199")


@dataclass(frozen=True)
class Split:
    cutoff_day: float
    test_fraction: float = 0.5

    def test_drive(self, instants: Instants) -> np.ndarray:
        """Per-drive bool: drive belongs to the test side."""
        return np.array([drive_group(s) < self.test_fraction for s in instants.serials], dtype=bool)

    def masks(self, instants: Instants) -> tuple[np.ndarray, np.ndarray]:
        """(train instants, test instants)."""
        is_test = self.test_drive(instants)[instants.drive]
        before = instants.day < self.cutoff_day
        return (~is_test) & before, is_test & ~before


def labels(instants: Instants, horizon: int, cutoff_day: float | None = None) -> np.ndarray:
    """1 / 0 / NaN (censored) per instant; with ``cutoff_day`` only what was known by then."""
    end = instants.end_day[instants.drive]
    failed = instants.failed[instants.drive]
    if cutoff_day is not None:
        failed = failed & (end < cutoff_day)
        end = np.minimum(end, cutoff_day)
    remaining = end - instants.day
    out = np.full(len(remaining), np.nan)
    out[remaining > horizon] = 0.0
    out[failed & (remaining <= horizon) & (remaining >= 0)] = 1.0
    return out


def backblaze_rule_score(features: np.ndarray) -> np.ndarray:
    return backblaze_flags(features).any(axis=1).astype(float)


def smart_flag_score(features: np.ndarray) -> np.ndarray:
    """The drive's own overall-health verdict (NaN where the data do not carry it)."""
    return features[:, DISK_FEATURES.index("smart_failed")].astype(float)


def choose_single_attribute(features: np.ndarray, y: np.ndarray) -> str:
    """The raw counter that alone ranks training instants best (by average precision)."""
    known = ~np.isnan(y)
    best, best_ap = SINGLE_ATTRIBUTE_CANDIDATES[0], -1.0
    for name in SINGLE_ATTRIBUTE_CANDIDATES:
        column = np.nan_to_num(features[known, DISK_FEATURES.index(name)].astype(float), nan=-1.0)
        if np.ptp(column) == 0:
            continue
        ap = float(average_precision_score(y[known], column))
        if ap > best_ap:
            best, best_ap = name, ap
    return best


def single_attribute_score(features: np.ndarray, name: str) -> np.ndarray:
    column: np.ndarray = np.nan_to_num(features[:, DISK_FEATURES.index(name)].astype(float), nan=-1.0)
    return column


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    # early stopping is off: its internal validation split is by row, which would mix a
    # drive's instants across the split; the fixed budget was chosen once, not on test data
    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=100,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


CALIBRATION_DAYS = 180.0
"""The probabilities are calibrated on the last half-year of training instants only.

Failure rates at a given risk score drift with the fleet's age and model mix. On the
2013-2016 training drives, out-of-fold probabilities of 0.05-0.4 (30 days) were about
right over the whole training period but half the observed rate in its last half-year,
and the months after the cut-off look like that last half-year. The ranking, and so
every detection rate and alarm set, is unchanged: the calibration is monotone.
"""


@dataclass
class TrainingSet:
    features: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    groups: np.ndarray
    day: np.ndarray | None = None  # of each row; calibration uses the most recent ones


def recent_rows(day: np.ndarray, days: float = CALIBRATION_DAYS) -> np.ndarray:
    """Rows in the last ``days`` before the newest training instant."""
    return np.asarray(day >= day.max() - days) if len(day) else np.zeros(0, dtype=bool)


def model_groups(instants: Instants) -> np.ndarray:
    """Per instant, an index of its drive model: the out-of-fold folds hold out whole drive
    models, so every choice made on them (age, counter weight, calibration, alert
    thresholds) is judged on drive models the fold never saw -- as in service."""
    _, per_drive = np.unique(np.asarray(instants.models), return_inverse=True)
    out: np.ndarray = per_drive[instants.drive]
    return out


def training_set(
    instants: Instants, mask: np.ndarray, y: np.ndarray, seed: int, max_negatives: int = MAX_NEGATIVES
) -> TrainingSet:
    """Labelled training instants; negatives subsampled (and re-weighted) to bound fit time;
    rows grouped by drive model."""
    index = np.flatnonzero(mask & ~np.isnan(y))
    positives = index[y[index] == 1.0]
    negatives = index[y[index] == 0.0]
    rate = min(1.0, max_negatives / max(1, len(negatives)))
    if rate < 1.0:
        rng = np.random.default_rng(seed)
        negatives = np.sort(rng.choice(negatives, size=int(len(negatives) * rate), replace=False))
    chosen = np.concatenate([positives, negatives])
    weight = np.concatenate([np.ones(len(positives)), np.full(len(negatives), 1.0 / rate)])
    groups = model_groups(instants)
    return TrainingSet(instants.features[chosen], y[chosen], weight, groups[chosen], instants.day[chosen])


def _calibration_rows(data: TrainingSet) -> np.ndarray | None:
    """The recent rows, or all (None) when there are no days or the recent ones lack a failure."""
    if data.day is None:
        return None
    recent = recent_rows(data.day)
    return recent if len(np.unique(data.y[recent])) == 2 else None


def fit_calibrated(
    data: TrainingSet,
    seed: int,
    also_score: tuple[np.ndarray, np.ndarray] | None = None,
    objective: Callable[[np.ndarray], float] | None = None,
    counter_weights: tuple[float, ...] = COUNTER_WEIGHTS,
    age_options: tuple[bool, ...] = AGE_OPTIONS,
) -> DiskRiskModel:
    """Monotone trees on drive-model-invariant inputs plus a weighted monotone counter score,
    calibrated on out-of-fold predictions grouped by ``data.groups`` (drive models in the
    pipeline; see :mod:`~fleetpulse.models.disk_model`).

    ``also_score=(features, groups)`` rows get out-of-fold probabilities in ``oof_also_``;
    ``objective`` ranks their out-of-fold scores to choose the counter weight from
    ``counter_weights`` and whether age is used from ``age_options`` (see
    :func:`~fleetpulse.models.pipeline.ranking_objective`). Rows with days are calibrated on
    their last ``CALIBRATION_DAYS`` (see there) when those hold failures.
    """
    model = DiskRiskModel(_classifier(seed), counter_weights=counter_weights, age_options=age_options)
    with single_thread():
        model.fit(
            data.features,
            data.y,
            sample_weight=data.weight,
            groups=data.groups,
            also_score=also_score,
            objective=objective,
            calibration_rows=_calibration_rows(data),
        )
    return model

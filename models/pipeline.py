"""Train and evaluate the disk model against the baselines on one Backblaze data set.

The same function serves ``fleetpulse train`` (which keeps the fitted models as the
artifact) and ``fleetpulse evaluate`` (which reports them): the evaluated model and
the served model are the same fit.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from fleetpulse.models.data import Instants
from fleetpulse.models.evaluation import (
    CAPS,
    CalibrationBins,
    DriveScores,
    FlagHeadroom,
    PairedDifference,
    brier,
    calibration_bins,
    detection_area,
    detection_at_far,
    drive_scores,
    flag_headroom,
    flagged_share,
    operating_point,
    paired_difference,
    pr_auc,
    precision_at_k,
    threshold_at_cap,
)
from fleetpulse.models.threads import single_thread
from fleetpulse.models.thresholds import thresholds_for_new_models
from fleetpulse.models.training import (
    Split,
    backblaze_rule_score,
    choose_single_attribute,
    fit_calibrated,
    labels,
    model_groups,
    single_attribute_score,
    smart_flag_score,
    training_set,
)

Step = Callable[[str], None]
RULE_NAME = "Backblaze rule (SMART 5/187/188/197/198 > 0)"


@dataclass(frozen=True)
class Experiment:
    name: str
    kind: str  # "daily" | "survival"
    cutoff: date
    horizons: tuple[int, ...]
    description: str


EXPERIMENTS = {
    "daily": Experiment(
        name="backblaze-2013-daily",
        kind="daily",
        cutoff=date(2013, 4, 30),
        horizons=(7,),
        description=(
            "2013-04-10..2013-05-19 daily full fleet. Train: training drives, days before 2013-04-30 "
            "(labels censored there). Test: the other drives, 2013-04-30..2013-05-19. Only a 7-day "
            "horizon is measurable in a 40-day window (a 30-day label needs 30 days of follow-up)."
        ),
    ),
    "survival": Experiment(
        name="backblaze-2013-2016-survival",
        kind="survival",
        cutoff=date(2015, 7, 1),
        horizons=(7, 30),
        description=(
            "2013-2016 start-stop table replayed on the power-on-hours scale (1 day = 24 POH). Train: "
            "training drives, instants before 2015-07-01 (labels censored there). Test: the other "
            "drives, instants from 2015-07-01 to the end. Instants are interval starts (a SMART "
            "value changed) plus each drive's last hour."
        ),
    ),
}


@dataclass
class ScorerResult:
    name: str
    drives: DriveScores
    points: dict[str, dict[str, float | None]]
    pr_auc: float
    brier: float | None
    precision_at_k: dict[int, float | None]


@dataclass
class HorizonResult:
    horizon: int
    scorers: list[ScorerResult]
    test_positive_drives: int
    test_healthy_drives: int
    train_positive_instants: int
    train_instants: int
    calibration: CalibrationBins | None
    alert_thresholds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # baseline name -> operating point label -> model minus baseline detection, ties split
    differences: dict[str, dict[str, PairedDifference]] = field(default_factory=dict)
    # can any ranking beat the rule at its own rate? on the training drives' out-of-fold
    # scores (what the model was chosen on) and on the test drives
    headroom: dict[str, FlagHeadroom] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    experiment: Experiment
    models: dict[int, Any]
    reference: np.ndarray
    single_attribute: dict[int, str]
    horizons: list[HorizonResult]
    train_drives: int
    test_drives: int


def _evaluate_scorer(
    name: str,
    instants: Instants,
    test: np.ndarray,
    score: np.ndarray,
    horizon: int,
    start_day: float,
    y_test: np.ndarray,
    probabilistic: bool,
    extra_fars: dict[str, float],
) -> ScorerResult:
    drives = drive_scores(instants, test, score, horizon)
    points: dict[str, dict[str, float | None]] = {}
    for cap in CAPS:
        points[f"cap {100 * cap:g}%"] = operating_point(drives, threshold_at_cap(drives.negative, cap)).summary()
    for label, far in extra_fars.items():
        points[label] = operating_point(drives, threshold_at_cap(drives.negative, far)).summary()
        points[label]["detection_rate_at_exact_far"] = detection_at_far(drives, far)
    return ScorerResult(
        name=name,
        drives=drives,
        points=points,
        pr_auc=pr_auc(drives),
        brier=brier(y_test[test], score[test]) if probabilistic else None,
        precision_at_k=precision_at_k(instants, test, score, horizon, start_day),
    )


def healthy_reference(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-feature median of healthy training instants: the "typical" value explanations reset to."""
    healthy = features[y == 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmedian(healthy, axis=0) if len(healthy) else np.full(features.shape[1], np.nan)


def censored_at(instants: Instants, cutoff: float) -> Instants:
    """The same instants as they were known at ``cutoff``: later failures not yet seen."""
    return Instants(
        instants.features,
        instants.drive,
        instants.day,
        instants.serials,
        instants.models,
        np.minimum(instants.end_day, cutoff),
        instants.failed & (instants.end_day < cutoff),
    )


def rule_false_alarm_rate(rule: DriveScores) -> float:
    """Share of healthy drives Backblaze's rule flags (its scores are 0 or 1): the false-alarm
    rate at which the model is compared with it, and up to which the counter weight is chosen."""
    return flagged_share(rule.negative)


def _fixed_rate(far: float, _negative: np.ndarray) -> float:
    return far


def paired_differences(
    scorers: list[ScorerResult], fars: dict[str, float], rule_label: str, seed: int
) -> dict[str, dict[str, PairedDifference]]:
    """The model (first scorer) against every baseline at every operating point, paired over
    drives; at the rule's own point the rate is the rule's in each resample."""
    model = scorers[0]
    out: dict[str, dict[str, PairedDifference]] = {}
    for baseline in scorers[1:]:
        for label, far in fars.items():
            own_rate = baseline.name == RULE_NAME and label == rule_label
            far_of = flagged_share if own_rate else functools.partial(_fixed_rate, far)
            out.setdefault(baseline.name, {})[label] = paired_difference(
                model.drives, baseline.drives, far_of, seed=seed
            )
    return out


def ranking_objective(
    instants: Instants, mask: np.ndarray, horizon: int, cutoff: float, max_far: float = max(CAPS)
) -> Callable[[np.ndarray], float]:
    """The selection objective (age, counter weight) on the ``mask`` instants as known at
    ``cutoff``: their scores -> mean drive-level detection over false-alarm rates 0..``max_far``
    (both alert caps), measured like the test report
    (:func:`~fleetpulse.models.evaluation.drive_scores`), on training data only."""
    known = censored_at(instants, cutoff)

    def objective(score_on_mask: np.ndarray) -> float:
        score = np.full(len(instants.day), -np.inf)
        score[mask] = score_on_mask
        return detection_area(drive_scores(known, mask, score, horizon), max_far)

    return objective


def held_out_thresholds(
    known: Instants, mask: np.ndarray, oof: np.ndarray, horizon: int, groups: np.ndarray
) -> dict[str, float]:
    """Alert threshold per cap from out-of-fold scores of the ``mask`` drives, each scored by a
    model that never saw its drive model (what a drive model new to the fleet looks like):
    the lowest that keeps the cap on most of their drive models (``groups``), see
    :mod:`~fleetpulse.models.thresholds`."""
    negatives = [drive_scores(known, mask & (groups == g), oof, horizon).negative for g in np.unique(groups[mask])]
    return thresholds_for_new_models(negatives)


def sound_sector_alarm(thresholds: dict[str, float], model: Any) -> dict[str, float]:
    """Sets the model's sector alarm to the highest finite stored threshold, so a drive with
    ``ALARM_SECTORS`` bad sectors is alarmed at every cap from its first report; the thresholds
    themselves stay as estimated (returned unchanged)."""
    finite = [t for t in thresholds.values() if np.isfinite(t) and 0.0 < t < 1.0]
    if finite:
        model.set_sector_alarm(max(finite))
    return thresholds


def alert_thresholds(
    thresholds: dict[str, float], train_drives: DriveScores, test_drives: DriveScores
) -> dict[str, dict[str, float | None]]:
    """The stored probability thresholds (:func:`held_out_thresholds`, from out-of-fold scores
    of the training drives as known at the cut-off -- what a deployment can know) and what
    they give on the training and the test drives."""
    out: dict[str, dict[str, float | None]] = {}
    for label, threshold in thresholds.items():
        on_train = operating_point(train_drives, threshold)
        on_test = operating_point(test_drives, threshold)
        out[label] = {
            "threshold": threshold if np.isfinite(threshold) else None,
            "train_false_alarm_rate": on_train.false_alarm_rate,
            "train_detection_rate": on_train.detection_rate,
            "test_false_alarm_rate": on_test.false_alarm_rate,
            "test_detection_rate": on_test.detection_rate,
        }
    return out


def run_experiment(instants: Instants, experiment: Experiment, seed: int, step: Step | None = None) -> ExperimentResult:
    say = step or (lambda _msg: None)
    cutoff = float(experiment.cutoff.toordinal())
    split = Split(cutoff_day=cutoff)
    train, test = split.masks(instants)
    is_test_drive = split.test_drive(instants)
    models: dict[int, Any] = {}
    chosen: dict[int, str] = {}
    horizons: list[HorizonResult] = []
    reference = np.full(instants.features.shape[1], np.nan)
    groups = model_groups(instants)
    for horizon in experiment.horizons:
        y_train = labels(instants, horizon, cutoff)
        data = training_set(instants, train, y_train, seed)
        say(
            f"{experiment.name}: fitting {horizon}-day model on {len(data.y):,} instants ({int(data.y.sum())} positive)"
        )
        objective = ranking_objective(instants, train, horizon, cutoff)
        model = fit_calibrated(data, seed, also_score=(instants.features[train], groups[train]), objective=objective)
        oof = np.full(len(instants.day), -np.inf)
        oof[train] = model.oof_also_
        del model.oof_also_  # training-side scores, not part of the served model
        known_train = censored_at(instants, cutoff)
        stored = sound_sector_alarm(held_out_thresholds(known_train, train, oof, horizon, groups), model)
        models[horizon] = model
        if horizon == max(experiment.horizons):
            reference = healthy_reference(instants.features[train], y_train[train])
        chosen[horizon] = choose_single_attribute(instants.features[train], y_train[train])
        say(f"{experiment.name}: scoring {int(test.sum()):,} test instants")
        score = np.zeros(len(instants.day))
        with single_thread():
            score[test] = model.predict_proba(instants.features[test])[:, 1]
        y_test = labels(instants, horizon)
        rule = backblaze_rule_score(instants.features)
        flag = smart_flag_score(instants.features)
        single = single_attribute_score(instants.features, chosen[horizon])
        rule_drives = drive_scores(instants, test, rule, horizon)
        rule_far = rule_false_alarm_rate(rule_drives)
        rule_label = f"rule's FAR {100 * rule_far:.2f}%"
        extra = {rule_label: rule_far}
        scorers = [
            _evaluate_scorer("model", instants, test, score, horizon, cutoff, y_test, True, extra),
            _evaluate_scorer(
                RULE_NAME,
                instants,
                test,
                rule,
                horizon,
                cutoff,
                y_test,
                False,
                extra,
            ),
            _evaluate_scorer(
                f"single attribute {chosen[horizon]} > t", instants, test, single, horizon, cutoff, y_test, False, extra
            ),
        ]
        notes = []
        if np.isnan(flag[test]).all():
            notes.append(
                "SMART overall-health flag: not present in this data set (Backblaze publishes attributes only), so that baseline cannot be computed here."
            )
        else:
            scorers.append(
                _evaluate_scorer(
                    "SMART overall-health flag",
                    instants,
                    test,
                    np.nan_to_num(flag, nan=0.0),
                    horizon,
                    cutoff,
                    y_test,
                    False,
                    extra,
                )
            )
        train_drives = drive_scores(known_train, train, oof, horizon)
        thresholds = alert_thresholds(stored, train_drives, scorers[0].drives)
        say(f"{experiment.name}: paired bootstrap of the {horizon}-day comparisons")
        fars = {f"cap {100 * cap:g}%": cap for cap in CAPS} | extra
        headroom = {
            "training drives (out-of-fold)": flag_headroom(
                train_drives, drive_scores(known_train, train, rule, horizon)
            ),
            "test drives": flag_headroom(scorers[0].drives, rule_drives),
        }
        known = test & ~np.isnan(y_test)
        calibration = None
        if y_test[known].sum() > 0:
            calibration = calibration_bins(y_test[known], score[known])
        horizons.append(
            HorizonResult(
                horizon=horizon,
                scorers=scorers,
                test_positive_drives=len(scorers[0].drives.positive),
                test_healthy_drives=len(scorers[0].drives.negative),
                train_positive_instants=int(data.y.sum()),
                train_instants=int((train & ~np.isnan(y_train)).sum()),
                calibration=calibration,
                alert_thresholds=thresholds,
                notes=notes,
                differences=paired_differences(scorers, fars, rule_label, seed),
                headroom=headroom,
            )
        )
    return ExperimentResult(
        experiment=experiment,
        models=models,
        reference=reference,
        single_attribute=chosen,
        horizons=horizons,
        train_drives=len(np.unique(instants.drive[train])),
        test_drives=int(is_test_drive[np.unique(instants.drive[test])].sum()) if test.any() else 0,
    )

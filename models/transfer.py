"""Leave-one-drive-model-out (and leave-one-vendor-out) evaluation of the disk model.

A municipal fleet mostly scores drive models the training data never held, and an
in-distribution split (every drive model on both sides) hides how a model transfers. Here,
for every drive model with at least ``MIN_FAILED_DRIVES`` failed test drives (and for every
vendor), the model is trained on the *other* drive models only -- training drives, instants
before the cut-off, labels censored there, exactly as the in-distribution experiment -- and
tested on every drive of the held-out model from the cut-off on, at its natural prevalence.
Everything the model chooses (age, counter weight, calibration, alert thresholds) comes
from the training drives' out-of-fold scores with folds that hold out whole drive models
(an inner leave-model-out validation); the single-attribute baseline is chosen on the
training models too. Held-out drives are only scored.

Per-fold fits are cached (scores of the held-out instants, thresholds, choices), keyed by
the replay, the fold and the code of the model, so the report can be regenerated cheaply.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleetpulse.models.data import Instants
from fleetpulse.models.evaluation import (
    CAPS,
    CalibrationBins,
    DriveScores,
    PairedDifference,
    calibration_bins,
    detection_at_far,
    drive_scores,
    flagged_share,
    operating_point,
    paired_difference,
    pr_auc,
    threshold_at_cap,
)
from fleetpulse.models.pipeline import (
    RULE_NAME,
    Experiment,
    Step,
    censored_at,
    held_out_thresholds,
    ranking_objective,
    sound_sector_alarm,
)
from fleetpulse.models.threads import single_thread
from fleetpulse.models.thresholds import cap_label, false_alarm_interval
from fleetpulse.models.training import (
    Split,
    backblaze_rule_score,
    choose_single_attribute,
    fit_calibrated,
    labels,
    model_groups,
    single_attribute_score,
    training_set,
)

MIN_FAILED_DRIVES = 20
TRANSFER_NEGATIVES = 20_000
"""Negatives kept per fold's fit (weighted back): many folds share two cores with other work."""
SCORED_HEALTHY_DRIVES = 0.25
"""Share of healthy training drives (all their instants) whose out-of-fold scores choose age and
counter weight and set the thresholds: drive-level false-alarm rates stay unbiased, at a
quarter of the scoring work; every failed drive is kept."""
MODEL = "model"
SINGLE = "single attribute (chosen on training models)"
POOLED = "pooled over held-out drive models"


def vendor(drive_model: str) -> str:
    """Manufacturer from a Backblaze model string (Hitachi drives are HGST's)."""
    head = drive_model.split()[0].upper()
    if head.startswith("ST"):
        return "Seagate"
    if head in ("HGST", "HITACHI"):
        return "HGST/Hitachi"
    if head == "WDC":
        return "WDC"
    return head.capitalize()


@dataclass(frozen=True)
class FoldFit:
    """What one fold's fit leaves behind: scores of the held-out instants and the choices."""

    score: np.ndarray  # model probability per held-out test instant
    thresholds: dict[str, float]  # alert threshold per cap, from the training drives' out-of-fold scores
    single_attribute: str
    age_used: bool
    counter_weight: float


@dataclass
class HeldOut:
    """One held-out drive model, vendor, or the pool of held-out drive models."""

    name: str
    kind: str  # "drive model" | "vendor" | "pooled"
    single_attribute: str
    drives: dict[str, DriveScores]  # MODEL, RULE_NAME, SINGLE
    rule_far: float
    detection: dict[str, dict[str, float]]  # scorer -> operating point -> detection (ties split)
    pr_auc: dict[str, float]
    lead_median_days: dict[str, float | None]  # scorer -> median lead at 1 % false alarms
    differences: dict[str, dict[str, PairedDifference]]  # baseline -> operating point -> model minus it
    alerts: dict[str, dict[str, float]]  # cap -> stored threshold(s), achieved FA (interval) / detection
    calibration: dict[str, float]  # mean predicted vs observed on labelled instants
    age_used: list[bool] = field(default_factory=list)
    counter_weight: list[float] = field(default_factory=list)

    @property
    def failed_drives(self) -> int:
        return len(self.drives[MODEL].positive)

    @property
    def healthy_drives(self) -> int:
        return len(self.drives[MODEL].negative)


@dataclass
class TransferResult:
    experiment: Experiment
    horizon: int
    drive_models: list[HeldOut]
    pooled: HeldOut | None
    vendors: list[HeldOut]
    pooled_calibration: CalibrationBins | None


def _code_digest() -> str:
    """The model's code: a cached fold is reused only while it is unchanged."""
    from fleetpulse.models import disk_model, evaluation, pipeline, thresholds, training

    sha = hashlib.sha256()
    for module in (disk_model, training, pipeline, evaluation, thresholds):
        sha.update(ast.dump(ast.parse(Path(str(module.__file__)).read_text())).encode())
    return sha.hexdigest()[:12]


def _fold_key(instants: Instants, held_out: tuple[str, ...], experiment: Experiment, horizon: int, seed: int) -> str:
    sha = hashlib.sha256()
    sha.update(json.dumps([experiment.name, experiment.cutoff.isoformat(), horizon, seed, sorted(held_out)]).encode())
    sha.update(np.ascontiguousarray(instants.features[:: max(1, len(instants.day) // 5000)]).tobytes())
    sha.update(np.ascontiguousarray(instants.end_day).tobytes())
    sha.update(f"{TRANSFER_NEGATIVES}/{SCORED_HEALTHY_DRIVES}".encode())
    return f"{sha.hexdigest()[:16]}-{_code_digest()}"


def _fit_fold(
    instants: Instants,
    train: np.ndarray,
    test: np.ndarray,
    horizon: int,
    cutoff: float,
    seed: int,
) -> FoldFit:
    y_train = labels(instants, horizon, cutoff)
    groups = model_groups(instants)
    data = training_set(instants, train, y_train, seed, TRANSFER_NEGATIVES)
    known = censored_at(instants, cutoff)
    rng = np.random.default_rng(seed)
    kept_drive = known.failed | (rng.random(len(known.failed)) < SCORED_HEALTHY_DRIVES)
    scored = train & kept_drive[instants.drive]
    objective = ranking_objective(instants, scored, horizon, cutoff)
    model = fit_calibrated(data, seed, also_score=(instants.features[scored], groups[scored]), objective=objective)
    oof = np.full(len(instants.day), -np.inf)
    oof[scored] = model.oof_also_
    thresholds = sound_sector_alarm(held_out_thresholds(known, scored, oof, horizon, groups), model)
    with single_thread():
        score = model.predict_proba(instants.features[test])[:, 1]
    return FoldFit(
        score=score,
        thresholds=thresholds,
        single_attribute=choose_single_attribute(instants.features[train], y_train[train]),
        age_used=bool(model.age_),
        counter_weight=float(model.counter_weight_),
    )


def _cached_fold(
    cache_dir: Path | None,
    key: str,
    compute: Any,
) -> FoldFit:
    path = cache_dir / f"transfer-{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return FoldFit(score=z["score"], **meta)
    fit: FoldFit = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "thresholds": fit.thresholds,
            "single_attribute": fit.single_attribute,
            "age_used": fit.age_used,
            "counter_weight": fit.counter_weight,
        }
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, score=fit.score, meta=np.array(json.dumps(meta)))
        tmp.replace(path)
    return fit


def _concat(parts: list[DriveScores]) -> DriveScores:
    return DriveScores(
        np.concatenate([p.positive for p in parts]),
        np.concatenate([p.negative for p in parts]),
        [d for p in parts for d in p.pos_days],
        [s for p in parts for s in p.pos_scores],
    )


def _fixed(far: float, _negative: np.ndarray) -> float:
    return far


def _summarise(
    name: str,
    kind: str,
    single_attribute: str,
    drives: dict[str, DriveScores],
    thresholds: list[tuple[DriveScores, dict[str, float]]],
    predicted_observed: tuple[float, float, int],
    fits: list[FoldFit],
    seed: int,
) -> HeldOut:
    """Every number of one held-out set; ``thresholds`` pairs each fold's model drive scores
    with the thresholds that fold stored (a pool has several)."""
    import functools

    rule_far = flagged_share(drives[RULE_NAME].negative)
    points = {f"FA {100 * cap:g}%": cap for cap in CAPS} | {"rule's FA rate": rule_far}
    detection = {
        scorer: {label: detection_at_far(d, far) for label, far in points.items()} for scorer, d in drives.items()
    }
    lead: dict[str, float | None] = {}
    for scorer, d in drives.items():
        days = operating_point(d, threshold_at_cap(d.negative, max(CAPS))).lead_days
        lead[scorer] = float(np.median(days)) if len(days) else None
    differences: dict[str, dict[str, PairedDifference]] = {}
    for baseline in (RULE_NAME, SINGLE):
        for label, far in points.items():
            far_of = (
                flagged_share if baseline == RULE_NAME and label == "rule's FA rate" else functools.partial(_fixed, far)
            )
            differences.setdefault(baseline, {})[label] = paired_difference(
                drives[MODEL], drives[baseline], far_of, seed=seed
            )
    alerts: dict[str, dict[str, float]] = {}
    for c in CAPS:
        cap = cap_label(c)
        alarmed = sum(int((d.negative >= t[cap]).sum()) for d, t in thresholds)
        detected = sum(int((d.positive >= t[cap]).sum()) for d, t in thresholds)
        healthy = sum(len(d.negative) for d, _ in thresholds)
        failed = sum(len(d.positive) for d, _ in thresholds)
        low, high = false_alarm_interval(alarmed, healthy, seed=seed)
        stored = [t[cap] for _, t in thresholds]
        alerts[cap] = {
            "cap": c,
            "threshold_min": min(stored),
            "threshold_max": max(stored),
            "false_alarms": float(alarmed),
            "healthy_drives": float(healthy),
            "false_alarm_rate": alarmed / max(1, healthy),
            "false_alarm_low": low,
            "false_alarm_high": high,
            "detection_rate": detected / max(1, failed),
        }
    predicted, observed, count = predicted_observed
    return HeldOut(
        name=name,
        kind=kind,
        single_attribute=single_attribute,
        drives=drives,
        rule_far=rule_far,
        detection=detection,
        pr_auc={scorer: pr_auc(d) for scorer, d in drives.items()},
        lead_median_days=lead,
        differences=differences,
        alerts=alerts,
        calibration={"mean_predicted": predicted, "observed": observed, "instants": float(count)},
        age_used=[f.age_used for f in fits],
        counter_weight=[f.counter_weight for f in fits],
    )


@dataclass
class _Fold:
    name: str
    test: np.ndarray
    fit: FoldFit
    drives: dict[str, DriveScores]
    y: np.ndarray  # labels of the test instants
    score: np.ndarray  # model probability of the test instants


def run_transfer(
    instants: Instants,
    experiment: Experiment,
    seed: int,
    cache_dir: Path | None = None,
    step: Step | None = None,
    min_failed: int = MIN_FAILED_DRIVES,
) -> TransferResult:
    """Leave-one-drive-model-out and leave-one-vendor-out on the experiment's longest horizon."""
    say = step or (lambda _msg: None)
    horizon = max(experiment.horizons)
    cutoff = float(experiment.cutoff.toordinal())
    train, _ = Split(cutoff_day=cutoff).masks(instants)
    after = instants.day >= cutoff
    drive_model = np.asarray(instants.models)
    drive_vendor = np.array([vendor(m) for m in drive_model])
    instant_vendor = drive_vendor[instants.drive]
    failed_after = instants.failed & (instants.end_day >= cutoff)
    y_all = labels(instants, horizon)
    rule = backblaze_rule_score(instants.features)

    def fold(name: str, held_out: np.ndarray, held_models: tuple[str, ...]) -> _Fold:
        test = held_out[instants.drive] & after
        fold_train = train & ~held_out[instants.drive]
        say(f"{experiment.name}: held out {name} ({int(failed_after[held_out].sum())} failed drives)")
        fit = _cached_fold(
            cache_dir,
            _fold_key(instants, held_models, experiment, horizon, seed),
            lambda: _fit_fold(instants, fold_train, test, horizon, cutoff, seed),
        )
        score = np.full(len(instants.day), -np.inf)
        score[test] = fit.score
        single = single_attribute_score(instants.features, fit.single_attribute)
        drives = {
            MODEL: drive_scores(instants, test, score, horizon),
            RULE_NAME: drive_scores(instants, test, rule, horizon),
            SINGLE: drive_scores(instants, test, single, horizon),
        }
        return _Fold(name, test, fit, drives, y_all[test], fit.score)

    def held(f: _Fold, kind: str) -> HeldOut:
        known = ~np.isnan(f.y)
        po = (
            (float(f.score[known].mean()), float(f.y[known].mean()), int(known.sum()))
            if known.any()
            else (np.nan,) * 2 + (0,)
        )
        return _summarise(
            f.name, kind, f.fit.single_attribute, f.drives, [(f.drives[MODEL], f.fit.thresholds)], po, [f.fit], seed
        )

    eligible = sorted(
        (m for m in np.unique(drive_model) if failed_after[drive_model == m].sum() >= min_failed),
        key=lambda m: -int(failed_after[drive_model == m].sum()),
    )
    model_folds = [fold(m, drive_model == m, (m,)) for m in eligible]
    drive_models = [held(f, "drive model") for f in model_folds]
    pooled, pooled_calibration = None, None
    if model_folds:
        drives = {scorer: _concat([f.drives[scorer] for f in model_folds]) for scorer in (MODEL, RULE_NAME, SINGLE)}
        y = np.concatenate([f.y for f in model_folds])
        score = np.concatenate([f.score for f in model_folds])
        known = ~np.isnan(y)
        pooled = _summarise(
            POOLED,
            "pooled",
            "per fold",
            drives,
            [(f.drives[MODEL], f.fit.thresholds) for f in model_folds],
            (float(score[known].mean()), float(y[known].mean()), int(known.sum())),
            [f.fit for f in model_folds],
            seed,
        )
        if y[known].sum() > 0:
            pooled_calibration = calibration_bins(y[known], score[known])
    vendors = sorted(
        (v for v in np.unique(drive_vendor) if failed_after[drive_vendor == v].sum() >= min_failed),
        key=lambda v: -int(failed_after[drive_vendor == v].sum()),
    )
    vendor_results = [
        held(fold(v, drive_vendor == v, tuple(sorted(set(drive_model[drive_vendor == v])))), "vendor")
        for v in vendors
        if (instant_vendor != v).any() and (train & (instant_vendor != v)).any()
    ]
    return TransferResult(experiment, horizon, drive_models, pooled, vendor_results, pooled_calibration)

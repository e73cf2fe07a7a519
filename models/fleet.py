"""Learning from the fleet's own outcomes: a challenger stacked on the shipped disk model.

The shipped model learned from Backblaze's data-centre drives. A fleet fails in its own ways
(one laptop model's SSD firmware, say), and its tickets close with what technicians found.
``fleetpulse train --fleet`` turns the ticket store's feature log and labels
(:mod:`fleetpulse.alerts.fleetlog`) into a challenger and measures it against the champion.

The challenger starts from the champion: its input is the champion model's own probability
(as a logit) plus the fleet's growth features and the drive's own alarms, fitted by logistic
regression on the fleet's rows (:func:`stack_features`). With no fleet signal it reproduces
the champion's ranking; where the fleet's outcomes disagree with the champion, it follows them.
A drive alarm (``critical_signs``) that the champion turns into a critical risk whatever its
model says is handed to the fitted layer instead only when the training rows show it on at
least :data:`MIN_SIGN_DEVICES` devices -- enough to weigh it; rarer alarms keep the override.

One device, one voice: any PC can report what it likes about its own disks, so the rows come only
from devices in IT's register (an agent cannot mint them), a device logging more disks than a
device state tracks (:data:`~fleetpulse.models.state.MAX_DISKS`: rotated serials) is left out
whole, and alarms are counted per device, so no single device can teach the layer to ignore one.

Protocol (Backblaze's, on the fleet's time axis): labels as known at the cut-off train the
challenger on the days before it (a row is positive when its component fails within
:data:`HORIZON_DAYS`, negative when known healthy that long, left out otherwise); the most
recent labelled period after the cut-off is held out. There, both scorers are compared on the
same components at the same false-alarm rate, paired: a component's score is its highest in
the horizon before its failure (failed) or over its known-healthy days (healthy), and the 95 %
interval of the detection difference comes from resampling components
(:func:`~fleetpulse.models.evaluation.paired_difference`). The challenger wins only when the
interval's lower end at the serving alert cap is above zero.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fleetpulse.alerts.fleetlog import LabelKey, Outcome, combine, row_label
from fleetpulse.models.artifact import TrainedDiskScorer, load_artifact, save_artifact, verified_trees
from fleetpulse.models.evaluation import CAPS, DriveScores, detection_at_far, paired_difference, threshold_at_cap
from fleetpulse.models.features import DISK_FEATURES, GROWTH_COUNTERS
from fleetpulse.models.index import METADATA_FILE, ArtifactError
from fleetpulse.models.rules import NVME_SPARE_MARGIN_PCT, RISK_CRITICAL, critical_signs
from fleetpulse.models.state import MAX_DISKS
from fleetpulse.models.threads import single_thread

log = logging.getLogger(__name__)

FLEET_KIND = "fleet-stacked"
MODEL_NAME = "disk-fleet"
HORIZON_DAYS = 30
MIN_SIGN_DEVICES = 20
"""Training devices showing a drive alarm before the fitted layer, not the override, weighs it."""
SIGNS = ("smart_failed", "critical_warning", "media_errors", "spare_margin_pct")
STACK_FEATURES: tuple[str, ...] = (
    "champion_logit",
    *(f"{c}_{kind}" for c in GROWTH_COUNTERS for kind in ("log", "delta_7d_log", "delta_30d_log", "growth_share_30d")),
    *(f"sign_{s}" for s in SIGNS),
)


class FleetTrainingError(ValueError):
    """The feature log and labels cannot train or evaluate a challenger (with the reason)."""


def _col(features: np.ndarray, name: str) -> np.ndarray:
    return np.asarray(features[:, DISK_FEATURES.index(name)], dtype=float)


def _log_growth(values: np.ndarray) -> np.ndarray:
    return np.asarray(np.log1p(np.clip(np.nan_to_num(values, nan=0.0), 0.0, None)), dtype=float)


def stack_features(features: np.ndarray, champion_probability: np.ndarray) -> np.ndarray:
    """The fitted layer's inputs: the champion's logit, per growth counter its level and growth
    (log scale, unknown = 0) and the share of the last 30 days it grew, and the drive's alarms."""
    p = np.clip(champion_probability, 1e-6, 1 - 1e-6)
    columns = [np.log(p / (1 - p))]
    for counter in GROWTH_COUNTERS:
        columns.append(_log_growth(_col(features, counter)))
        columns.append(_log_growth(_col(features, f"{counter}_delta_7d")))
        columns.append(_log_growth(_col(features, f"{counter}_delta_30d")))
        columns.append(np.nan_to_num(_col(features, f"{counter}_growth_days_30d"), nan=0.0) / 30.0)
    columns.append((_col(features, "smart_failed") == 1.0).astype(float))
    columns.append((np.nan_to_num(_col(features, "critical_warning"), nan=0.0) > 0).astype(float))
    columns.append((np.nan_to_num(_col(features, "media_errors"), nan=0.0) > 0).astype(float))
    columns.append((_col(features, "spare_margin_pct") <= NVME_SPARE_MARGIN_PCT).astype(float))
    return np.column_stack(columns)


@dataclass
class FleetDiskScorer(TrainedDiskScorer):
    """The champion's disk model with a layer fitted on the fleet's outcomes on its longest horizon."""

    fleet: Any = None
    learned_signs: tuple[str, ...] = ()
    base: str = ""
    """name:version of the champion it was stacked on"""
    evaluation: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: np.ndarray, horizon: int) -> np.ndarray:
        base = super().predict(features, horizon)
        if horizon != max(self.models):
            return base
        with single_thread():
            return np.asarray(self.fleet.predict_proba(stack_features(features, base))[:, 1], dtype=float)

    def critical(self, feats: dict[str, float]) -> list[str]:
        return [sign for sign in critical_signs(feats) if sign not in self.learned_signs]


class HasCritical(Protocol):
    def predict(self, features: np.ndarray, horizon: int) -> np.ndarray: ...
    def critical(self, feats: dict[str, float]) -> list[str]: ...


def served_risk(scorer: HasCritical, features: np.ndarray, horizon: int = HORIZON_DAYS) -> np.ndarray:
    """The risk the worker would publish for these rows: the model, raised to critical on an override."""
    risk = scorer.predict(features, horizon)
    for i, row in enumerate(features):
        if scorer.critical(dict(zip(DISK_FEATURES, row.tolist(), strict=True))):
            risk[i] = max(risk[i], RISK_CRITICAL)
    return risk


def load_disk_scorer(directory: Path, digests: dict[str, str]) -> TrainedDiskScorer:
    """The served disk scorer of a verified artifact: the Backblaze-trained model or a fleet challenger."""
    payload, meta = load_artifact(directory, digests)
    if meta.get("kind") != FLEET_KIND:
        return TrainedDiskScorer.from_artifact(directory, digests)
    if tuple(meta.get("feature_names", ())) != DISK_FEATURES or tuple(meta.get("stack_features", ())) != STACK_FEATURES:
        raise ArtifactError(f"{directory}: trained on different features than this code computes")
    try:
        return FleetDiskScorer(
            name=str(meta["name"]),
            version=str(meta["version"]),
            models=verified_trees(directory, {int(h): payload[f"horizon_{h}"] for h in meta["horizons"]}),
            reference=np.asarray(payload["reference"], dtype=float),
            operating_points=meta.get("operating_points"),
            fleet=payload["fleet"],
            learned_signs=tuple(str(s) for s in meta["learned_signs"]),
            base=str(meta["base"]),
            evaluation=dict(meta.get("evaluation") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{directory}: incomplete artifact ({type(exc).__name__}: {exc})") from None


class LoggedRow(Protocol):
    """What the training job reads of one feature-log row (``alerts.store.models.FeatureLogRow``)."""

    device_id: str
    component: str
    component_id: str
    day: date
    features: dict[str, Any]


@dataclass
class FleetRows:
    """One row per disk and day (the day's last logged scoring): features as the scorers compute them."""

    features: np.ndarray
    day: np.ndarray  # date ordinals
    component: np.ndarray  # index into keys
    keys: list[LabelKey]
    left_out: dict[str, int] = field(default_factory=dict)
    """Devices left out for logging more components than a device state tracks, with their count."""

    @classmethod
    def from_log(cls, rows: Sequence[LoggedRow]) -> FleetRows:
        last: dict[tuple[LabelKey, date], LoggedRow] = {}
        components: dict[str, set[tuple[str, str]]] = {}
        for row in rows:
            last[((row.device_id, row.component, row.component_id), row.day)] = row
            components.setdefault(row.device_id, set()).add((row.component, row.component_id))
        left_out = {device: len(c) for device, c in components.items() if len(c) > MAX_DISKS}
        if left_out:
            log.warning(
                "devices left out of fleet training: more components than a device tracks",
                extra={"fields": {"devices": len(left_out), "examples": sorted(left_out)[:5]}},
            )
            last = {k: row for k, row in last.items() if k[0][0] not in left_out}
        keys: dict[LabelKey, int] = {}
        features, days, owners = [], [], []
        for (key, day), row in sorted(last.items(), key=lambda item: (item[0][1], item[0][0])):
            values = row.features
            features.append([_finite(values.get(name)) for name in DISK_FEATURES])
            days.append(day.toordinal())
            owners.append(keys.setdefault(key, len(keys)))
        return cls(
            np.asarray(features, dtype=float).reshape(len(features), len(DISK_FEATURES)),
            np.asarray(days, dtype=np.int64),
            np.asarray(owners, dtype=np.int64),
            list(keys),
            left_out,
        )


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def row_labels(rows: FleetRows, outcomes: Sequence[Outcome], known_at: date, horizon: int = HORIZON_DAYS) -> np.ndarray:
    """Label per row as known at ``known_at`` (facts dated later are not known yet); nan = unknown."""
    labels, retired = combine(o for o in outcomes if o.on_day <= known_at)
    y = np.full(len(rows.day), np.nan)
    for i, (ordinal, owner) in enumerate(zip(rows.day.tolist(), rows.component.tolist(), strict=True)):
        key = rows.keys[owner]
        value = row_label(date.fromordinal(ordinal), horizon, labels.get(key), retired.get(key[0]), known_at)
        if value is not None:
            y[i] = value
    return y


def component_scores(score: np.ndarray, y: np.ndarray, owner: np.ndarray, mask: np.ndarray) -> DriveScores:
    """Per component in ``mask``: its best score in the horizon before its failure (failed), else its best
    over its known-healthy rows (healthy); components without a labelled row are left out. Sorted by
    component, so two scorers on the same rows list the same components in the same order."""
    n = int(owner.max()) + 1 if len(owner) else 0
    best = {}
    for value in (1.0, 0.0):
        rows = mask & (y == value)
        top = np.full(n, -np.inf)
        np.maximum.at(top, owner[rows], score[rows])
        best[value] = (top, np.bincount(owner[rows], minlength=n) > 0)
    failed = best[1.0][1]
    healthy = best[0.0][1] & ~failed
    return DriveScores(best[1.0][0][failed], best[0.0][0][healthy])


@dataclass
class FleetExperiment:
    challenger: FleetDiskScorer
    report: dict[str, Any]


def _fixed(far: float, _negative: np.ndarray) -> float:
    return far


def train_fleet_challenger(
    champion: TrainedDiskScorer,
    rows: FleetRows,
    outcomes: Sequence[Outcome],
    labelled_through: date,
    holdout_days: int = 90,
    gate_cap: str = "cap 1%",
    seed: int = 0,
) -> FleetExperiment:
    """Fit the challenger on the days before ``labelled_through - holdout_days`` and compare it with
    ``champion`` on the held-out days (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    cutoff = labelled_through - timedelta(days=holdout_days)
    days = rows.day
    train = days < cutoff.toordinal()
    test = (days >= cutoff.toordinal()) & (days <= labelled_through.toordinal())
    y_train = row_labels(rows, outcomes, cutoff)
    y_test = row_labels(rows, outcomes, labelled_through)
    fit = train & ~np.isnan(y_train)
    if not fit.any() or len(np.unique(y_train[fit])) < 2:
        raise FleetTrainingError(
            f"no failures and healthy rows to learn from before {cutoff}: {int(fit.sum())} labelled training rows"
        )
    raw = TrainedDiskScorer.predict(champion, rows.features, HORIZON_DAYS)
    signs = [critical_signs(dict(zip(DISK_FEATURES, row.tolist(), strict=True))) for row in rows.features]
    learned = tuple(
        sign
        for sign in SIGNS
        if len({rows.keys[int(rows.component[i])][0] for i in np.flatnonzero(fit) if sign in signs[i]})
        >= MIN_SIGN_DEVICES
    )
    layer = LogisticRegression(C=1.0, max_iter=2000)
    with single_thread():
        layer.fit(stack_features(rows.features[fit], raw[fit]), y_train[fit])
    challenger = FleetDiskScorer(
        name=MODEL_NAME,
        version="unsaved",
        models=dict(champion.models),
        reference=champion.reference,
        fleet=layer,
        learned_signs=learned,
        base=f"{champion.name}:{champion.version}",
    )
    challenger_risk = served_risk(challenger, rows.features)
    champion_risk = served_risk(champion, rows.features)
    train_negative = component_scores(challenger_risk, y_train, rows.component, train).negative
    challenger.operating_points = {
        str(HORIZON_DAYS): {
            "basis": "the fleet's training rows before the cut-off: lowest risk that alarms at most the cap's "
            "share of components known healthy",
            **{f"cap {100 * cap:g}%": {"threshold": threshold_at_cap(train_negative, cap)} for cap in CAPS},
        }
    }
    for point in challenger.operating_points[str(HORIZON_DAYS)].values():
        if isinstance(point, dict) and not math.isfinite(point["threshold"]):
            point["threshold"] = None
    held_out_challenger = component_scores(challenger_risk, y_test, rows.component, test)
    held_out_champion = component_scores(champion_risk, y_test, rows.component, test)
    if not len(held_out_champion.positive) or not len(held_out_champion.negative):
        raise FleetTrainingError(f"the held-out period {cutoff}..{labelled_through} has no failed or no healthy disks")
    comparison = {}
    for cap in CAPS:
        label = f"cap {100 * cap:g}%"
        diff = paired_difference(held_out_challenger, held_out_champion, functools.partial(_fixed, cap), seed=seed)
        comparison[label] = {
            "false_alarm_rate": cap,
            "champion_detection": detection_at_far(held_out_champion, cap),
            "challenger_detection": detection_at_far(held_out_challenger, cap),
            "difference": diff.difference,
            "difference_low": diff.low,
            "difference_high": diff.high,
        }
    if gate_cap not in comparison:
        raise FleetTrainingError(f"gate {gate_cap!r} is not one of {sorted(comparison)}")
    report: dict[str, Any] = {
        "kind": FLEET_KIND,
        "champion": f"{champion.name}:{champion.version}",
        "horizon_days": HORIZON_DAYS,
        "labelled_through": labelled_through.isoformat(),
        "cutoff": cutoff.isoformat(),
        "train": {
            "rows": int(fit.sum()),
            "positive_rows": int(y_train[fit].sum()),
            "disks": len(np.unique(rows.component[fit])),
            "failed_disks": len(np.unique(rows.component[fit & (y_train == 1.0)])),
        },
        "held_out": {
            "failed_disks": len(held_out_champion.positive),
            "healthy_disks": len(held_out_champion.negative),
        },
        "learned_signs": list(learned),
        "left_out_devices": len(rows.left_out),
        "comparison": comparison,
        "gate": gate_cap,
        "wins": comparison[gate_cap]["difference_low"] > 0.0,
    }
    challenger.evaluation = report
    return FleetExperiment(challenger, report)


def publish_fleet_model(experiment: FleetExperiment, champion_dir: Path, registry_dir: Path, seed: int) -> Path:
    """Write ``<registry_dir>/disk-fleet-<content digest>/`` (not yet registered)."""
    challenger = experiment.challenger
    base_meta = json.loads((champion_dir / METADATA_FILE).read_bytes())
    payload: dict[str, Any] = {f"horizon_{h}": model for h, model in challenger.models.items()}
    payload["reference"] = challenger.reference
    payload["fleet"] = challenger.fleet
    meta: dict[str, Any] = {
        "kind": FLEET_KIND,
        "name": MODEL_NAME,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "horizons": sorted(challenger.models),
        "feature_names": list(DISK_FEATURES),
        "stack_features": list(STACK_FEATURES),
        "models": base_meta.get("models", {str(h): {} for h in challenger.models}),
        "base": challenger.base,
        "learned_signs": list(challenger.learned_signs),
        "operating_points": challenger.operating_points,
        "evaluation": experiment.report,
    }
    staging = registry_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    meta = save_artifact(staging, payload, meta)
    meta["version"] = meta["content_sha256"][:12]
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    final = registry_dir / f"{MODEL_NAME}-{meta['version']}"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    challenger.version = meta["version"]
    return final


def report_markdown(report: dict[str, Any]) -> str:
    """The comparison as a short Markdown page (the JSON is in the artifact's metadata)."""
    lines = [
        f"# Fleet challenger vs champion {report['champion']}",
        "",
        f"Trained on the fleet's feature log before {report['cutoff']} ({report['train']['rows']:,} labelled disk-days, "
        f"{report['train']['failed_disks']} failed disks); held out {report['cutoff']}..{report['labelled_through']}: "
        f"{report['held_out']['failed_disks']} failed and {report['held_out']['healthy_disks']:,} healthy disks, "
        f"{report['horizon_days']}-day horizon.",
        "",
        "| false-alarm rate | champion detection | challenger detection | difference (95 % paired interval) |",
        "|---|---|---|---|",
    ]
    for point in report["comparison"].values():
        lines.append(
            f"| {100 * point['false_alarm_rate']:g} % | {100 * point['champion_detection']:.1f} % "
            f"| {100 * point['challenger_detection']:.1f} % | {100 * point['difference']:+.1f} pp "
            f"({100 * point['difference_low']:+.1f} .. {100 * point['difference_high']:+.1f}) |"
        )
    verdict = "wins" if report["wins"] else "does not win"
    lines += ["", f"Gate ({report['gate']}): the challenger {verdict} (lower end of the interval above zero)."]
    if report.get("left_out_devices"):
        lines.append(
            f"Left out: {report['left_out_devices']} devices that logged more disks than a device tracks ({MAX_DISKS})."
        )
    if report["learned_signs"]:
        lines.append(f"Drive alarms weighed by the fleet's outcomes instead of overriding: {report['learned_signs']}.")
    return "\n".join(lines) + "\n"


class PromotionRefused(RuntimeError):
    """The gate said no (with the numbers), or the artifact is not a registered challenger."""


def adopt_champion(registry_dir: Path, source_dir: Path, key: bytes | None) -> str:
    """The disk champion of ``registry_dir``; when it has none, the champion of ``source_dir`` (e.g. the
    one shipped with the package) is copied in and registered, its files checked against the source index."""
    from fleetpulse.contract import ScorerRole
    from fleetpulse.models.index import artifact_digests, artifact_dir, read_registry
    from fleetpulse.models.registry import register_artifact

    registry = read_registry(registry_dir, key)
    champion = registry.champions.get("disk")
    if champion is not None:
        return champion
    source = read_registry(source_dir, key)
    champion = source.champions.get("disk")
    if champion is None:
        raise FleetTrainingError(f"neither {registry_dir} nor {source_dir} registers a disk champion to start from")
    target = registry_dir / champion
    shutil.copytree(artifact_dir(source_dir, champion), target, dirs_exist_ok=True)
    if artifact_digests(target) != source.digests(champion):
        shutil.rmtree(target)
        raise ArtifactError(f"{champion}: the copied files do not match {source_dir}'s index")
    register_artifact(registry_dir, "disk", champion, ScorerRole.CHAMPION, key=key)
    return champion


def promotion_verdict(scorer: TrainedDiskScorer, champion: str) -> tuple[bool, str]:
    """Whether the gate lets ``scorer`` become champion in place of ``champion`` (``name:version``), and the
    evidence in words: a win against an earlier champion is no win against this one."""
    evaluation = scorer.evaluation if isinstance(scorer, FleetDiskScorer) else {}
    if not evaluation:
        return False, f"{scorer.name}:{scorer.version} carries no fleet evaluation against the champion"
    point = evaluation["comparison"][evaluation["gate"]]
    evidence = (
        f"at {evaluation['gate']} on {evaluation['cutoff']}..{evaluation['labelled_through']}: champion "
        f"{evaluation['champion']} detects {100 * point['champion_detection']:.1f} %, challenger "
        f"{100 * point['challenger_detection']:.1f} %, difference {100 * point['difference']:+.1f} pp "
        f"(95 % paired interval {100 * point['difference_low']:+.1f} .. {100 * point['difference_high']:+.1f})"
    )
    if evaluation["champion"] != champion:
        return (
            False,
            f"measured against {evaluation['champion']}, but the champion is now {champion}: retrain ({evidence})",
        )
    return bool(evaluation["wins"]), evidence


def promotion_check(registry_dir: Path, artifact_id: str, key: bytes | None) -> tuple[bool, str, dict[str, str]]:
    """The gate's verdict on the registered disk challenger ``artifact_id``, loaded as the worker would, and
    the digests of the files it judged (:func:`make_champion` registers exactly those)."""
    from fleetpulse.models.index import read_registry
    from fleetpulse.models.registry import load_artifact

    registry = read_registry(registry_dir, key)
    if artifact_id not in registry.challengers.get("disk", []):
        raise PromotionRefused(f"{artifact_id} is not a registered disk challenger of {registry_dir}")
    current_id = registry.champions.get("disk")
    if current_id is None:
        raise PromotionRefused(f"{registry_dir} has no disk champion to measure {artifact_id} against")
    current = load_artifact(registry, registry_dir, current_id)
    verdict = promotion_verdict(load_artifact(registry, registry_dir, artifact_id), f"{current.name}:{current.version}")
    return (*verdict, dict(registry.digests(artifact_id)))


def make_champion(registry_dir: Path, artifact_id: str, key: bytes | None, digests: dict[str, str]) -> str | None:
    """Register ``artifact_id`` as the disk champion (the previous one becomes a challenger); returns the previous.

    ``digests`` are those :func:`promotion_check` judged: files changed since raise ``ArtifactError``.
    """
    from fleetpulse.contract import ScorerRole
    from fleetpulse.models.index import read_registry
    from fleetpulse.models.registry import register_artifact

    previous = read_registry(registry_dir, key).champions.get("disk")
    register_artifact(registry_dir, "disk", artifact_id, ScorerRole.CHAMPION, key=key, digests=digests)
    return previous

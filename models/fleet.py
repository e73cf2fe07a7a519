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
same devices at the same false-alarm rate, paired, one vote per device (:func:`device_scores`):
a device whose disk failed scores its failed disks' highest risk in the horizon before the
failure, any other device its disks' highest over their known-healthy days (a false alarm is a
device that would get a wrong ticket). The 95 % interval of the detection difference comes from
resampling devices (:func:`~fleetpulse.models.evaluation.paired_difference` on the device
scores): per disk, one PC reporting absurd values on its eight disks could fill a tight cap's
whole false-alarm budget and decide the comparison alone. The challenger wins only when the
interval's lower end at the serving alert cap is above zero, and stays above zero with the
single most influential device left out, and without the group of healthy devices whose absence
lowers the difference most (:func:`stability`).

The group is there because devices can collude. At a cap, the champion's measured detection is set by
its few highest-scoring healthy devices: the cap's false-alarm budget, ``cap`` times the healthy
held-out devices (0.35 devices at 0.1 % of 350). Registered PCs reporting absurd values, their tickets
closed no fault found, are such devices: once there are more of them than the budget, the champion
detects nothing and any challenger ranking them low wins, though the two are equal on every honest
device. The group left out has :func:`group_size` ``k = max(MIN_GROUP_DEVICES, floor(budget))``
devices, and up to ``k`` colluders fit inside it: forcing a promotion takes more than ``k``, at least
21 in any fleet and more than the budget in a large one. Beyond ``k``, the colluders the group cannot
hold take part of the champion's budget of honest false alarms; measured with 60 failed devices, forcing
the gate took 24 to 27 colluders among 350 to 3,000 healthy devices at either cap (5 to 8 with one
device left out), 32 at a budget of 20 and 74 at a budget of 50 (11 and 33). A real improvement resting
on more devices than that still wins. No cap is refused for its budget alone: a challenger that fixes 40
false alarms of the champion's wins at 0.1 % of 340 healthy devices, where the budget is 0.34.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.linear_model import LogisticRegression

from fleetpulse.alerts.fleetlog import LabelKey, Outcome, combine, row_label
from fleetpulse.compat import UTC
from fleetpulse.models.artifact import (
    TrainedDiskScorer,
    check_predictions,
    horizon_models,
    load_artifact,
    recorded_predictions,
    reference_row,
    save_artifact,
)
from fleetpulse.models.evaluation import (
    CAPS,
    Cut,
    DriveScores,
    alarm_weights,
    cut_at_far,
    detection_at_far,
    paired_difference,
    threshold_at_cap,
)
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
MIN_GROUP_DEVICES = 20
"""Healthy held-out devices the gate leaves out together at the least (:func:`group_size`): as many as
it takes to teach the fitted layer an alarm."""
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
    """The served disk scorer of a verified artifact, once it predicts what it recorded."""
    payload, meta = load_artifact(directory, digests)
    scorer = disk_scorer(directory, payload, meta)
    check_predictions(directory, scorer, meta)
    return scorer


def disk_scorer(directory: Path, payload: dict[str, Any], meta: dict[str, Any]) -> TrainedDiskScorer:
    """The disk scorer of a loaded artifact, its models proven servable: the Backblaze-trained model or a fleet
    challenger. Not served before :func:`~fleetpulse.models.artifact.check_predictions` passes."""
    if meta.get("kind") != FLEET_KIND:
        return TrainedDiskScorer.from_loaded(directory, payload, meta)
    if tuple(meta.get("feature_names", ())) != DISK_FEATURES or tuple(meta.get("stack_features", ())) != STACK_FEATURES:
        raise ArtifactError(f"{directory}: trained on different features than this code computes")
    models = horizon_models(directory, payload, meta)
    if not isinstance(payload.get("fleet"), LogisticRegression):
        raise ArtifactError(
            f"{directory}: the fleet layer is a {type(payload.get('fleet')).__name__}, not the fitted layer"
        )
    try:
        return FleetDiskScorer(
            name=str(meta["name"]),
            version=str(meta["version"]),
            models=models,
            reference=reference_row(payload["reference"]),
            operating_points=meta.get("operating_points"),
            fleet=payload["fleet"],
            learned_signs=tuple(str(s) for s in meta["learned_signs"]),
            base=str(meta["base"]),
            evaluation=dict(meta.get("evaluation") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{directory}: incomplete artifact ({type(exc).__name__}: {exc})") from None


def recorded_metadata(directory: Path, digests: dict[str, str]) -> bytes | None:
    """For an artifact written before artifacts recorded their predictions: its metadata with them recorded here,
    once its files match ``digests`` and its models are proven servable (walkable trees), so a model is never
    asked to predict before. None for an artifact that records them and predicts them here.

    What is recorded checks this environment only against itself: the operator records them where the model
    is trusted to score as it was trained (``fleetpulse models migrate``)."""
    payload, meta = load_artifact(directory, digests)
    scorer = disk_scorer(directory, payload, meta)
    if meta.get("predictions") is not None:
        check_predictions(directory, scorer, meta)
        return None
    try:
        meta["predictions"] = recorded_predictions(scorer)
    except Exception as exc:  # a model that cannot even predict the probe rows
        raise ArtifactError(
            f"{directory}: the model does not predict ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    check_predictions(directory, scorer, meta)  # one call and small calls agree with the recording
    return (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode()


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


@dataclass(frozen=True)
class DeviceScores:
    """One score per held-out device (:func:`device_scores`) and whose it is, in the same order."""

    scores: DriveScores
    failed: tuple[str, ...]
    """device of each ``scores.positive``"""
    healthy: tuple[str, ...]
    """device of each ``scores.negative``"""


def row_devices(rows: FleetRows) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per row the index of its device, and the devices (sorted)."""
    names = tuple(sorted({key[0] for key in rows.keys}))
    index = {name: i for i, name in enumerate(names)}
    of_component = np.asarray([index[key[0]] for key in rows.keys], dtype=np.int64)
    return of_component[rows.component] if len(rows.component) else np.zeros(0, np.int64), names


def device_scores(
    score: np.ndarray, y: np.ndarray, device: np.ndarray, names: Sequence[str], mask: np.ndarray
) -> DeviceScores:
    """One vote per device in ``mask``: the unit the gate counts and resamples, since any device may lie
    about its own disks (and a device has up to :data:`~fleetpulse.models.state.MAX_DISKS` of them).

    Labels are per disk. A device is failed when one of its disks has a row in the horizon before its
    failure, scored by the highest of those rows: an alarm on a sibling disk that did not fail does not
    detect it. Any other device with a known-healthy row is healthy, scored by the highest over its disks'
    known-healthy rows: a false alarm is a device that would get at least one wrong ticket. Devices
    without a labelled row are left out. Sorted by device, so two scorers on the same rows pair up."""
    component = component_scores(score, y, device, mask)
    n = len(names)
    failed = np.bincount(device[mask & (y == 1.0)], minlength=n) > 0
    healthy = (np.bincount(device[mask & (y == 0.0)], minlength=n) > 0) & ~failed
    return DeviceScores(
        component,
        tuple(names[i] for i in np.flatnonzero(failed).tolist()),
        tuple(names[i] for i in np.flatnonzero(healthy).tolist()),
    )


def _largest_share(weights: np.ndarray) -> tuple[float, int]:
    """The largest single device's share of the false alarms, and which device (-1: no false alarm)."""
    total = float(weights.sum())
    if total <= 0.0:
        return 0.0, -1
    top = int(np.argmax(weights))
    return float(weights[top]) / total, top


def _drop(scores: DriveScores, failed: Sequence[int] = (), healthy: Sequence[int] = ()) -> DriveScores:
    return DriveScores(np.delete(scores.positive, list(failed)), np.delete(scores.negative, list(healthy)))


def _tied_score(negative: np.ndarray, far: float) -> float:
    cut = cut_at_far(np.sort(negative)[::-1], far)
    return -np.inf if cut is None else cut.tied


def leave_one_out(model: DriveScores, baseline: DriveScores, far: float) -> list[tuple[float, bool, int]]:
    """The point difference at ``far`` with each device left out: (difference, failed?, index) per device.

    Leaving a device out changes a scorer's detection only by which side of the tied healthy score its own
    score lies (above, at, below) and whether it failed, so each scorer has at most six cases to compute:
    the pass stays linear in the devices whatever the ties."""
    cache: dict[tuple[int, bool, bool, bool], float] = {}
    tied_at = (_tied_score(model.negative, far), _tied_score(baseline.negative, far))

    def detection(which: int, scores: DriveScores, failed: bool, i: int) -> float:
        tied = tied_at[which]
        value = float((scores.positive if failed else scores.negative)[i])
        case = (which, failed, value > tied, value == tied)
        if case not in cache:
            left = _drop(scores, failed=[i]) if failed else _drop(scores, healthy=[i])
            cache[case] = detection_at_far(left, far)
        return cache[case]

    return [
        (detection(0, model, failed, i) - detection(1, baseline, failed, i), failed, i)
        for failed, count in ((True, len(model.positive)), (False, len(model.negative)))
        for i in range(count)
    ]


def group_size(far: float, healthy: int) -> int:
    """How many healthy devices the gate leaves out together (:func:`leave_group_out`): the false alarms
    ``far`` allows among ``healthy`` devices (the budget), at least :data:`MIN_GROUP_DEVICES`."""
    return max(MIN_GROUP_DEVICES, int(np.floor(far * healthy)))


def leave_group_out(model: DriveScores, baseline: DriveScores, far: float, k: int) -> tuple[float, np.ndarray]:
    """The point difference at ``far`` without the ``k`` healthy devices whose absence lowers it most, and
    their indices (``0 < k <`` healthy devices; scores finite).

    Without the group, a scorer's detection depends only on its cut among the rest
    (:class:`~fleetpulse.models.evaluation.Cut`: the tied score, how many lie above it and at it), and it
    never falls when a higher score of its own is left out instead of a lower one. So for each cut the
    baseline can reach, the worst group takes the numbers that cut needs from the healthy devices the
    baseline scores above, at and below the tied score, each time those the model scores lowest. Trying
    every reachable cut is exact (the brute-force test checks it): without ties there are at most
    ``k`` + the budget + 1 of them, so the search stays fast on any fleet."""
    u, w = baseline.negative, model.negative
    n, rest = len(u), len(u) - k
    if not 0 < k < n:
        raise ValueError(f"cannot leave {k} of {n} healthy devices out")
    allowed = int(np.floor(far * rest))
    if allowed >= rest:  # every device alarmed whichever are left out
        return float(len(model.positive) > 0) - float(len(baseline.positive) > 0), np.arange(k)
    order = np.argsort(-u, kind="stable")  # the baseline's ranking
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    lowest_w = np.argsort(w, kind="stable")
    w_desc = np.sort(w)[::-1]
    # the model's tied score among the rest is one of its top allowed + 1 + k scores
    window = np.unique(w_desc[: allowed + 1 + k])[::-1]
    at_or_above = np.searchsorted(-w_desc, -window, side="right")
    above = np.searchsorted(-w_desc, -window, side="left")

    def model_cut(removed: np.ndarray) -> Cut:
        gone = np.sort(removed)
        rest_at_or_above = at_or_above - (k - np.searchsorted(gone, window, side="left"))
        i = int(np.argmax(rest_at_or_above >= allowed + 1))
        rest_above = above[i] - (k - np.searchsorted(gone, window[i], side="right"))
        return Cut.of_counts(far, rest, window[i], int(rest_above), int(rest_at_or_above[i]))

    # the model's detection is lowest without its k lowest scores: a bound that skips most candidates
    model_lowest = model_cut(w[lowest_w[:k]]).detection(model.positive)
    best: tuple[tuple[float, float, int], np.ndarray] | None = None
    starts = np.flatnonzero(np.r_[True, u[order][1:] != u[order][:-1]]).tolist()
    for start, end in zip(starts, [*starts[1:], n], strict=True):  # baseline's tied score u[order[start]]
        if start > allowed + k:
            break
        if end <= allowed:
            continue
        above_tie = order[:start][np.argsort(w[order[:start]], kind="stable")]
        at_tie = order[start:end][np.argsort(w[order[start:end]], kind="stable")]
        below_tie = lowest_w[: k + end][rank[lowest_w[: k + end]] >= end][:k]
        for out_above in range(max(0, start - allowed), min(k, start, end - allowed - 1) + 1):
            kept_above = start - out_above
            for out_at in range(min(k - out_above, end - start - max(1, allowed + 1 - kept_above)) + 1):
                out_below = k - out_above - out_at
                if out_below > len(below_tie):
                    continue
                champion = Cut.of_counts(far, rest, u[order[start]], kept_above, end - out_at - out_above)
                baseline_detection = champion.detection(baseline.positive)
                # equal differences: the group that raises the baseline most, then the most of its top devices
                tail = (-baseline_detection, -(out_above + out_at))
                if best is not None and (model_lowest - baseline_detection, *tail) >= best[0]:
                    continue
                group = np.concatenate([above_tie[:out_above], at_tie[:out_at], below_tie[:out_below]])
                key = (model_cut(w[group]).detection(model.positive) - baseline_detection, *tail)
                if best is None or key < best[0]:
                    best = (key, group)
    assert best is not None  # the baseline's own cut is always reachable
    return best[0][0], best[1]


def _interval_without(
    model: DeviceScores,
    baseline: DeviceScores,
    far: float,
    failed: Sequence[int],
    healthy: Sequence[int],
    seed: int,
    resamples: int,
) -> dict[str, float]:
    """The gate's paired interval without the ``failed`` and ``healthy`` devices (their indices)."""
    diff = paired_difference(
        _drop(model.scores, failed, healthy),
        _drop(baseline.scores, failed, healthy),
        functools.partial(_fixed, far),
        resamples=resamples,
        seed=seed,
    )
    return {"difference": diff.difference, "difference_low": diff.low, "difference_high": diff.high}


def stability(
    model: DeviceScores, baseline: DeviceScores, far: float, seed: int = 0, resamples: int = 1000
) -> dict[str, Any]:
    """The gate's paired interval again without the devices that could decide it.

    One device: the one whose removal lowers the point difference most (:func:`leave_one_out`), and the
    one with the largest share of either scorer's false alarms at ``far``; the report is the lowest
    (which device, why, and the interval without it).

    A group (``group``): any device can make itself a top-ranked healthy device of one scorer (absurd
    values, its ticket closed no fault found), and a group larger than the false-alarm budget sets that
    scorer's threshold alone. So the interval is repeated without the :func:`group_size` healthy devices
    whose absence lowers the point difference most (:func:`leave_group_out`): up to that many colluders
    fit inside the group, and the win must show without them. Failed devices are disks a technician found
    failed and are left out one at a time only: a real gain of a few more caught failures must count.

    It holds when every lower end stays above zero."""
    share = {
        name: alarm_weights(scores.scores.negative, scores.scores.negative, far)
        for name, scores in (("challenger", model), ("champion", baseline))
    }
    weight = np.maximum(share["challenger"], share["champion"])
    ranked = sorted(
        leave_one_out(model.scores, baseline.scores, far),
        key=lambda c: (c[0], 0.0 if c[1] else -float(weight[c[2]]), (model.failed if c[1] else model.healthy)[c[2]]),
    )
    checks: dict[tuple[bool, int], str] = {}
    if ranked:
        checks[ranked[0][1:]] = "its removal lowers the difference most"
    for name, weights in share.items():
        part, top = _largest_share(weights)
        if top >= 0:
            checks.setdefault((False, top), f"largest share of the {name}'s false alarms ({100 * part:.0f} %)")
    worst: dict[str, Any] = {}
    for (failed, i), why in checks.items():
        left = _interval_without(model, baseline, far, [i] if failed else [], [] if failed else [i], seed, resamples)
        if not worst or left["difference_low"] < worst["difference_low"]:
            worst = {"device": (model.failed if failed else model.healthy)[i], "failed": failed, "why": why, **left}
    worst["devices_checked"] = len(checks)
    healthy = len(model.healthy)
    k = group_size(far, healthy)
    group: dict[str, Any] = {"size": k, "healthy_devices": healthy, "budget": far * healthy, "devices": []}
    if k < healthy:
        _, members = leave_group_out(model.scores, baseline.scores, far, k)
        members = members[np.lexsort((members, -baseline.scores.negative[members]))]  # the champion's first
        group["devices"] = [model.healthy[i] for i in members.tolist()]
        group["champion_false_alarms"] = int((share["champion"][members] > 0).sum())
        group.update(_interval_without(model, baseline, far, [], members.tolist(), seed, resamples))
    group["holds"] = bool(group["devices"]) and group["difference_low"] > 0.0
    worst["group"] = group
    worst["holds"] = bool(checks) and worst["difference_low"] > 0.0 and group["holds"]
    return worst


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
    device, names = row_devices(rows)
    held_out_challenger = device_scores(challenger_risk, y_test, device, names, test)
    held_out_champion = device_scores(champion_risk, y_test, device, names, test)
    if not len(held_out_champion.failed) or not len(held_out_champion.healthy):
        raise FleetTrainingError(
            f"the held-out period {cutoff}..{labelled_through} has no failed or no healthy devices"
        )
    held_out_disks = component_scores(champion_risk, y_test, rows.component, test)
    comparison = {}
    for cap in CAPS:
        label = f"cap {100 * cap:g}%"
        challenger_scores, champion_scores = held_out_challenger.scores, held_out_champion.scores
        diff = paired_difference(challenger_scores, champion_scores, functools.partial(_fixed, cap), seed=seed)
        comparison[label] = {
            "false_alarm_rate": cap,
            "champion_detection": detection_at_far(champion_scores, cap),
            "challenger_detection": detection_at_far(challenger_scores, cap),
            "difference": diff.difference,
            "difference_low": diff.low,
            "difference_high": diff.high,
            **{
                f"{name}_largest_device_share": _largest_share(alarm_weights(scores.negative, scores.negative, cap))[0]
                for name, scores in (("champion", champion_scores), ("challenger", challenger_scores))
            },
        }
    if gate_cap not in comparison:
        raise FleetTrainingError(f"gate {gate_cap!r} is not one of {sorted(comparison)}")
    stable = stability(held_out_challenger, held_out_champion, comparison[gate_cap]["false_alarm_rate"], seed=seed)
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
            "failed_devices": len(held_out_champion.failed),
            "healthy_devices": len(held_out_champion.healthy),
            "failed_disks": len(held_out_disks.positive),
            "healthy_disks": len(held_out_disks.negative),
        },
        "learned_signs": list(learned),
        "left_out_devices": len(rows.left_out),
        "unit": "device",
        "comparison": comparison,
        "gate": gate_cap,
        "stability": stable,
        "wins": comparison[gate_cap]["difference_low"] > 0.0 and stable["holds"],
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
        "predictions": recorded_predictions(challenger),
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
    held = report["held_out"]
    lines = [
        f"# Fleet challenger vs champion {report['champion']}",
        "",
        f"Trained on the fleet's feature log before {report['cutoff']} ({report['train']['rows']:,} labelled disk-days, "
        f"{report['train']['failed_disks']} failed disks); held out {report['cutoff']}..{report['labelled_through']}: "
        f"{held['failed_devices']} devices with a failed disk and {held['healthy_devices']:,} healthy devices "
        f"({held['failed_disks']} failed and {held['healthy_disks']:,} healthy disks), "
        f"{report['horizon_days']}-day horizon. One vote per device: its highest risk.",
        "",
        "| false-alarm rate | champion detection | challenger detection | difference (95 % paired interval) "
        "| largest one-device share of false alarms (champion / challenger) | false alarms allowed (devices) |",
        "|---|---|---|---|---|---|",
    ]
    for point in report["comparison"].values():
        lines.append(
            f"| {100 * point['false_alarm_rate']:g} % | {100 * point['champion_detection']:.1f} % "
            f"| {100 * point['challenger_detection']:.1f} % | {100 * point['difference']:+.1f} pp "
            f"({100 * point['difference_low']:+.1f} .. {100 * point['difference_high']:+.1f}) "
            f"| {100 * point['champion_largest_device_share']:.1f} % / "
            f"{100 * point['challenger_largest_device_share']:.1f} % "
            f"| {_count(point['false_alarm_rate'] * held['healthy_devices'])} |"
        )
    verdict = "wins" if report["wins"] else "does not win"
    lines += [
        "",
        f"Gate ({report['gate']}): the challenger {verdict} (it must keep the interval's lower end above zero, "
        "also with the most influential device left out, and without the group of healthy devices whose absence "
        "lowers the difference most).",
        f"W{_stability_words(report['stability'], report['comparison'][report['gate']])[1:]}.",
        f"W{_group_words(report['stability']['group'], report['gate'])[1:]}.",
    ]
    if report.get("left_out_devices"):
        lines.append(
            f"Left out: {report['left_out_devices']} devices that logged more disks than a device tracks ({MAX_DISKS})."
        )
    if report["learned_signs"]:
        lines.append(f"Drive alarms weighed by the fleet's outcomes instead of overriding: {report['learned_signs']}.")
    return "\n".join(lines) + "\n"


def _stability_words(stable: dict[str, Any], point: dict[str, Any]) -> str:
    words = (
        f"without device {stable['device']} ({stable['why']}): difference {100 * stable['difference']:+.1f} pp "
        f"({100 * stable['difference_low']:+.1f} .. {100 * stable['difference_high']:+.1f})"
    )
    if point["difference_low"] > 0.0 >= stable["difference_low"]:
        return f"{words}: one device decides the gate"
    if point["difference"] > 0.0 >= stable["difference"]:
        return f"{words}: the whole difference rests on this one device"
    return words


def _count(devices: float) -> str:
    """A number of devices that may be fractional (a cap's budget): 0.35, 3.5, 20."""
    return f"{devices:.2f}".rstrip("0").rstrip(".")


def _group_words(group: dict[str, Any], gate: str) -> str:
    healthy, size = group["healthy_devices"], group["size"]
    budget = _count(group["budget"])
    why = (
        f"at {gate} the {healthy:,} healthy held-out devices allow {budget} false alarms: any group of more than "
        f"{budget} devices the champion ranks above the failures sets its threshold, and devices reporting absurd "
        "values whose tickets close no fault found are such a group"
    )
    if not group["devices"]:
        return f"without {size} healthy devices: not measurable on {healthy} healthy held-out devices; {why}"
    shown = ", ".join(group["devices"][:5]) + (", ..." if size > 5 else "")
    words = (
        f"without the {size} healthy devices whose absence lowers the difference most ({shown}; "
        f"{group['champion_false_alarms']} of them among the champion's false alarms): difference "
        f"{100 * group['difference']:+.1f} pp ({100 * group['difference_low']:+.1f} .. "
        f"{100 * group['difference_high']:+.1f})"
    )
    if group["holds"]:
        return words
    return (
        f"{words}: the win rests on {size} healthy devices, as few as could collude; {why}. A real improvement "
        f"also shows without any {size} devices: gate at a looser cap or wait for more outcomes"
    )


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
    stable = evaluation.get("stability")
    if evaluation.get("unit") != "device" or not isinstance(stable, dict):
        # counted per disk, one device could decide the comparison: that win proves nothing
        return False, f"measured per disk, not per device, with no one-device check: retrain ({evidence})"
    evidence += f"; {_stability_words(stable, point)}"
    group = stable.get("group")
    if not isinstance(group, dict):
        # a win one group of colluding devices may have forced proves nothing
        return False, f"measured with no group check: retrain ({evidence})"
    evidence += f"; {_group_words(group, evaluation['gate'])}"
    if evaluation["champion"] != champion:
        return (
            False,
            f"measured against {evaluation['champion']}, but the champion is now {champion}: retrain ({evidence})",
        )
    holds = bool(stable["holds"]) and bool(group["holds"]) and point["difference_low"] > 0.0
    return bool(evaluation["wins"]) and holds, evidence


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

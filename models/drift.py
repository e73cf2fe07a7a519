"""Population stability (PSI) of features and scores, per device model.

For the stream processor: every hour or so call
``check_drift(scorer_set, states, scores)`` with the device states it holds (or a large
sample) and the latest scores; it returns one :class:`DriftResult` per (device model,
feature or score) for every scorer that carries a reference profile (trained artifacts
store the profile of their training data). Log or export results with level
``"drift"``; they are a reason to retrain, not an alert on a device.

PSI = sum((a - e) * ln(a / e)) over bins fixed on the reference (deciles plus a
"missing" bin); < 0.1 stable, 0.1-0.25 watch, > 0.25 drift (the usual credit-risk
convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fleetpulse.contract import RiskScore
from fleetpulse.models.features import DISK_FEATURES, disk_vector
from fleetpulse.models.state import DeviceState

EPSILON = 1e-4
WATCH, DRIFT = 0.1, 0.25
MIN_SAMPLES = 50
SCORE_KEY = "__score__"


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two distributions over the same bins (fractions; empty bins smoothed)."""
    e = np.clip(np.asarray(expected, dtype=float), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=float), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def bin_fractions(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Fractions per bin: len(edges)+1 value bins, then one bin for missing values."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(np.asarray(edges), values[~missing], side="right"), minlength=len(edges) + 1)
    total = max(len(values), 1)
    return [float(c) / total for c in counts] + [float(missing.sum()) / total]


def column_profile(values: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    known = values[~np.isnan(values)]
    edges = sorted(set(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1]).tolist())) if len(known) else []
    return {"edges": edges, "fractions": bin_fractions(values, edges)}


def build_profile(features: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Reference profile of a training set: JSON-serialisable, stored in artifact metadata."""
    profile = {name: column_profile(features[:, i].astype(float)) for i, name in enumerate(DISK_FEATURES)}
    profile[SCORE_KEY] = column_profile(scores.astype(float))
    return profile


@dataclass(frozen=True)
class DriftResult:
    scorer: str
    cohort: str
    name: str
    psi: float
    samples: int
    level: Literal["ok", "watch", "drift"]


def _level(value: float) -> Literal["ok", "watch", "drift"]:
    return "drift" if value > DRIFT else "watch" if value > WATCH else "ok"


def drift_for(
    profile: dict[str, Any], scorer: str, states: Sequence[DeviceState], scores: Sequence[RiskScore]
) -> list[DriftResult]:
    """PSI per device model for one disk scorer's reference ``profile``."""
    rows: dict[str, list[list[float]]] = {}
    for state in states:
        cohort = state.model or "unknown"
        for disk in state.disks.values():
            rows.setdefault(cohort, []).append(disk_vector(disk))
    model_of = {s.device_id: (s.model or "unknown") for s in states}
    risks: dict[str, list[float]] = {}
    for score in scores:
        if score.model_name == scorer:
            risks.setdefault(model_of.get(score.device_id, "unknown"), []).append(score.risk)
    out = []
    for cohort, matrix in sorted(rows.items()):
        if len(matrix) < MIN_SAMPLES:
            continue
        data = np.asarray(matrix, dtype=float)
        for i, name in enumerate(DISK_FEATURES):
            ref = profile.get(name)
            if ref is None:
                continue
            value = psi(ref["fractions"], bin_fractions(data[:, i], ref["edges"]))
            out.append(DriftResult(scorer, cohort, name, value, len(matrix), _level(value)))
    for cohort, values in sorted(risks.items()):
        ref = profile.get(SCORE_KEY)
        if ref is None or len(values) < MIN_SAMPLES:
            continue
        value = psi(ref["fractions"], bin_fractions(np.asarray(values), ref["edges"]))
        out.append(DriftResult(scorer, cohort, "risk", value, len(values), _level(value)))
    return [r for r in out if math.isfinite(r.psi)]


def check_drift(scorer_set: Any, states: Sequence[DeviceState], scores: Sequence[RiskScore]) -> list[DriftResult]:
    """Drift of every scorer in ``scorer_set`` (a ``ScorerSet``) that carries a reference profile."""
    out: list[DriftResult] = []
    for scorer in [*scorer_set.champions, *scorer_set.challengers]:
        profile = getattr(scorer, "drift_profile", None)
        if profile:
            out.extend(drift_for(profile, scorer.name, states, scores))
    return out

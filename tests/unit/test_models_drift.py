"""PSI drift: a scorer's inputs that moved away from its training profile are reported, unmoved ones are not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from fleetpulse.compat import UTC
from fleetpulse.contract import Component, RiskScore
from fleetpulse.models.drift import DRIFT, SCORE_KEY, WATCH, check_drift, column_profile, psi
from fleetpulse.models.state import DeviceState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEVICES = 400


@dataclass
class _Scorer:
    name: str
    drift_profile: dict[str, Any]


@dataclass
class _ScorerSet:
    champions: list[_Scorer]
    challengers: list[_Scorer]


def _scores(risks: np.ndarray, model_name: str) -> list[RiskScore]:
    return [
        RiskScore(
            device_id=f"pc-{i}",
            component=Component.DISK,
            risk=float(r),
            model_name=model_name,
            model_version="1",
            report_seq=0,
            collected_at=NOW,
            scored_at=NOW,
        )
        for i, r in enumerate(risks)
    ]


@pytest.fixture
def scorers() -> _ScorerSet:
    training = np.random.default_rng(1).beta(2, 8, size=5000)
    return _ScorerSet(champions=[_Scorer("disk", {SCORE_KEY: column_profile(training)})], challengers=[])


STATES = [DeviceState(device_id=f"pc-{i}", model="ST4000DM000") for i in range(DEVICES)]


def test_scores_from_the_training_distribution_are_stable(scorers: _ScorerSet) -> None:
    same = np.random.default_rng(2).beta(2, 8, size=DEVICES)
    (result,) = check_drift(scorers, STATES, _scores(same, "disk"))
    assert (result.scorer, result.cohort, result.name, result.samples) == ("disk", "ST4000DM000", "risk", DEVICES)
    assert result.psi < WATCH
    assert result.level == "ok"


def test_shifted_scores_are_reported_as_drift(scorers: _ScorerSet) -> None:
    shifted = np.random.default_rng(2).beta(5, 5, size=DEVICES)  # the fleet now scores far higher
    (result,) = check_drift(scorers, STATES, _scores(shifted, "disk"))
    assert result.psi > DRIFT
    assert result.level == "drift"


def test_scores_of_other_models_and_small_cohorts_are_not_judged(scorers: _ScorerSet) -> None:
    shifted = np.random.default_rng(2).beta(5, 5, size=DEVICES)
    assert check_drift(scorers, STATES, _scores(shifted, "battery")) == []
    assert check_drift(scorers, STATES[:10], _scores(shifted[:10], "disk")) == []


def test_psi_is_zero_for_equal_bins_and_grows_with_the_shift() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    assert psi(reference, reference) == pytest.approx(0.0)
    assert 0 < psi(reference, [0.3, 0.25, 0.25, 0.2]) < psi(reference, [0.7, 0.1, 0.1, 0.1])

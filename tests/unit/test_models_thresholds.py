"""The alert-threshold estimator: a quantile across drive models of each model's own threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.models.evaluation import CAPS, threshold_at_cap
from fleetpulse.models.thresholds import (
    COVERAGE,
    MIN_MODELS,
    false_alarm_interval,
    measurable,
    threshold_for_new_models,
    thresholds_for_new_models,
)

PROPERTY = settings(max_examples=200, deadline=None)


def far(negative: np.ndarray, threshold: float) -> float:
    return float((negative >= threshold).mean())


@st.composite
def drive_models(draw: st.DrawFn, min_models: int = 0) -> list[np.ndarray]:
    """Per drive model, the healthy drives' scores: models differ in size and in level."""
    count = draw(st.integers(min_models, 12))
    out = []
    for _ in range(count):
        size = draw(st.integers(1, 400))
        level = draw(st.floats(0.0, 0.9))
        seed = draw(st.integers(0, 2**16))
        out.append(np.clip(level + 0.1 * np.random.default_rng(seed).standard_normal(size), 0.0, 1.0))
    return out


@PROPERTY
@given(drive_models(min_models=MIN_MODELS), st.sampled_from([0.01, 0.05]))
def test_the_threshold_keeps_the_cap_on_the_coverage_share_of_models_and_is_the_lowest_that_does(
    models: list[np.ndarray], cap: float
) -> None:
    counted = measurable(models, cap)
    threshold = threshold_for_new_models(models, cap)
    if len(counted) < MIN_MODELS:
        pooled = np.concatenate(models)
        assert threshold == threshold_at_cap(pooled, cap)
        assert far(pooled, threshold) <= cap
        return
    keeping = np.mean([far(n, threshold) <= cap for n in counted])
    assert keeping >= COVERAGE
    lower = np.nextafter(threshold, -np.inf)
    assert np.mean([far(n, lower) <= cap for n in counted]) < COVERAGE


@PROPERTY
@given(drive_models())
def test_a_stricter_cap_never_gets_a_lower_threshold(models: list[np.ndarray]) -> None:
    thresholds = thresholds_for_new_models(models, (0.001, 0.01, 0.05))
    assert thresholds["cap 0.1%"] >= thresholds["cap 1%"] >= thresholds["cap 5%"]
    assert set(thresholds_for_new_models(models)) == {f"cap {100 * cap:g}%" for cap in CAPS}


@PROPERTY
@given(drive_models(min_models=5), st.integers(0, 2**16))
def test_one_pathological_drive_model_moves_the_threshold_at_most_one_model_up(
    models: list[np.ndarray], seed: int
) -> None:
    """A model whose "healthy" drives all score high (dying in bulk) cannot drag the threshold
    to its level once enough other models are measured (5 in all, at 80 % coverage): the
    threshold stays at or below the highest other model's own."""
    cap = 0.01
    counted = measurable(models, cap)
    if np.ceil(COVERAGE * (len(counted) + 1)) > len(counted):
        return
    dying = np.random.default_rng(seed).uniform(1.5, 2.0, 500)  # above every other drive
    with_dying = threshold_for_new_models([*models, dying], cap)
    assert with_dying < threshold_at_cap(dying, cap)
    own = sorted(threshold_at_cap(n, cap) for n in counted)
    assert with_dying <= own[-1]


def test_models_too_small_to_allow_one_false_alarm_do_not_count() -> None:
    big = [np.linspace(0, 1, 200) + k for k in range(3)]
    small = [np.full(50, 100.0)]  # 50 drives allow no alarm at 1 %
    assert threshold_for_new_models([*big, *small], 0.01) == threshold_for_new_models(big, 0.01)
    assert len(measurable([*big, *small], 0.01)) == 3


def test_the_strict_cap_falls_back_to_the_pooled_drives_when_too_few_models_measure_it() -> None:
    models = [np.linspace(0, 1, 500), np.linspace(0, 2, 500)]
    pooled = np.concatenate(models)
    assert threshold_for_new_models(models, 0.001) == threshold_at_cap(pooled, 0.001)
    assert threshold_for_new_models([], 0.01) == -np.inf  # nothing to alarm on: no healthy drive measured


def test_coverage_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="coverage"):
        threshold_for_new_models([np.zeros(10)], 0.01, coverage=0.0)


@PROPERTY
@given(st.integers(1, 5000), st.data())
def test_the_false_alarm_interval_holds_the_rate(healthy: int, data: st.DataObject) -> None:
    alarmed = data.draw(st.integers(0, healthy))
    low, high = false_alarm_interval(alarmed, healthy)
    assert 0.0 <= low <= alarmed / healthy <= high <= 1.0
    if alarmed == 0:
        assert (low, high) == (0.0, 0.0)


def test_the_false_alarm_interval_narrows_with_more_drives_and_rejects_impossible_counts() -> None:
    small = false_alarm_interval(2, 200)
    large = false_alarm_interval(200, 20_000)
    assert large[1] - large[0] < small[1] - small[0]
    assert false_alarm_interval(0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="alarmed"):
        false_alarm_interval(3, 2)

"""Alert thresholds that keep their false-alarm cap on drive models the training data never held.

A threshold is only as good as the false-alarm rate it gives on a drive model new to the
fleet. Drive models differ a lot in where their healthy drives score: on leave-model-out
scores, the threshold that alarms 1 % of one model's healthy drives alarms none of another's
and a tenth of a third's (a model whose "healthy" drives are dying in bulk). A threshold set
on the pooled training drives is dominated by whichever models are largest or worst, so it
is either far too strict for the rest or too loose for a model like the new one.

So each training drive model with enough healthy drives to measure the cap gets its own
threshold from its leave-model-out scores (a model that never saw that drive model scored
them: what a new model looks like), and the stored threshold is the lowest at which at least
``COVERAGE`` of those models keep the cap -- a quantile across drive models, not across
drives. With fewer than ``MIN_MODELS`` measurable models the pooled drives set it (a drive
model counts only once it allows one false alarm at the cap, so the strict cap often falls
back). A stricter cap never gets a lower threshold than a looser one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fleetpulse.models.evaluation import CAPS, threshold_at_cap

COVERAGE = 0.8
"""Share of (training) drive models that must keep the cap: 4 in 5 new drive models are expected to."""
MIN_MODELS = 3
"""Measurable drive models needed before their quantile is trusted over the pooled drives."""


def cap_label(cap: float) -> str:
    return f"cap {100 * cap:g}%"


def measurable(negatives: Sequence[np.ndarray], cap: float) -> list[np.ndarray]:
    """Drive models whose healthy drives allow at least one false alarm at ``cap``."""
    return [n for n in negatives if np.floor(cap * len(n)) >= 1]


def threshold_for_new_models(negatives: Sequence[np.ndarray], cap: float, coverage: float = COVERAGE) -> float:
    """Lowest threshold keeping false alarms at or under ``cap`` on at least ``coverage`` of the
    measurable drive models (``negatives``: per drive model, the best leave-model-out score of
    each healthy drive); the pooled drives' threshold when fewer than ``MIN_MODELS`` are measurable."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError("coverage must be in (0, 1]")
    models = measurable(negatives, cap)
    if len(models) < MIN_MODELS:
        pooled = np.concatenate([np.asarray(n, dtype=float) for n in negatives]) if negatives else np.zeros(0)
        return threshold_at_cap(pooled, cap)
    per_model = np.array([threshold_at_cap(n, cap) for n in models])
    # a model keeps the cap exactly at thresholds >= its own: the inverted CDF is the lowest
    # threshold with at least ``coverage`` of the models at or under the cap
    return float(np.quantile(per_model, coverage, method="inverted_cdf"))


def thresholds_for_new_models(negatives: Sequence[np.ndarray], caps: Sequence[float] = CAPS) -> dict[str, float]:
    """:func:`threshold_for_new_models` per cap, made non-increasing in the cap."""
    out: dict[str, float] = {}
    at_least = -np.inf
    for cap in sorted(caps, reverse=True):
        at_least = max(at_least, threshold_for_new_models(negatives, cap))
        out[cap_label(cap)] = at_least
    return {cap_label(cap): out[cap_label(cap)] for cap in caps}


def false_alarm_interval(alarmed: int, healthy: int, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of a false-alarm rate (healthy drives resampled with replacement:
    the alarmed count of a resample is binomial). Zero alarms give (0, 0): read the count, not
    only the interval, for small drive models."""
    if healthy <= 0:
        return (0.0, 0.0)
    if not 0 <= alarmed <= healthy:
        raise ValueError("alarmed must be between 0 and healthy")
    draws = np.random.default_rng(seed).binomial(healthy, alarmed / healthy, size=resamples) / healthy
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)

"""Recalibration of the parts forecast from outcomes already seen, and its overdispersed interval.

The per-part probabilities come from models that do not know the hardware model (the disk
model is trained on Backblaze, the battery interval on lab cells), and real counts vary more
than independent, exactly known probabilities allow. Both are corrected from the record of
earlier forecast windows: per (component, hardware model) the failures observed and the
failures expected by the uncorrected forecast (:class:`WindowCount`). Only windows that had
*ended* before the forecast is made are used (:func:`calibrate` drops the others), so a
backtest scores every window with what production would have known then.

Rate factor, shrunk (gamma-Poisson empirical Bayes). Observed ~ Poisson(theta * expected) per
hardware model; theta has a gamma prior with the pooled factor ``theta0`` of its component
as mean and ``shape`` as strength (its coefficient of variation is ``1 / sqrt(shape)``), so
the posterior mean ``(shape + observed) / (shape / theta0 + expected)`` is the pooled factor
for a model with little evidence and its own rate for a model with a lot. ``shape`` is the
between-model spread, estimated by the method of moments from the models' observed/expected
ratios beyond their Poisson noise and shrunk toward the prior spread; the pooled factor is
shrunk toward 1 (the uncorrected forecast) the same way. A factor multiplies the hazard:
``1 - (1 - p) ** theta``, so a probability stays a probability.

Overdispersed interval. Given a rate multiplier ``u`` the count is Poisson-binomial with
probabilities ``1 - (1 - p) ** (theta * u)``; ``u`` is gamma with mean 1 and variance
``v = (1 + 1 / posterior_shape) * (1 + dispersion) - 1``: the factor's own uncertainty times
the window-to-window spread (batches, seasonality) measured on past windows as the variance
of observed around expected beyond Poisson, ``sum((O - mu)^2 - mu) / sum(mu^2)``. The mixture
is integrated over ``MIXTURE_NODES`` equal-probability quantiles of ``u`` (moved to keep its mean
and variance exactly); at ``v = 0`` it is the exact Poisson-binomial. Within the mixture, parts
whose probabilities differ by less than ``BIN_WIDTH`` (10 %; all below ``BIN_FLOOR`` together)
enter as one binomial at their mean probability, which keeps the mean and changes the variance
by less than 0.1 %: a group costs a
fraction of a millisecond to a few, whatever its number of parts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.stats import gamma

from fleetpulse.contract import Component
from fleetpulse.models.forecast_rows import Calibration, PartCalibration, calibration_key
from fleetpulse.models.forecast_settings import CalibrationPrior

MIXTURE_NODES = 16
BIN_WIDTH = 0.1
BIN_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class WindowCount:
    """Failures of one (component, hardware model) in one past window, and the uncorrected expectation."""

    component: Component
    hardware_model: str
    start: float
    end: float
    """Window bounds on any one time axis (days); a count is usable by forecasts made at or after ``end``."""
    expected: float
    observed: float
    stratum: str = ""
    """:func:`~fleetpulse.models.forecast_rows.calibration_stratum` of the parts counted."""


def calibrate(counts: Iterable[WindowCount], made_at: float, prior: CalibrationPrior) -> Calibration:
    """Factors and dispersion for a forecast made at ``made_at``, from the windows ended by then."""
    known = [_aged(c, made_at, prior.half_life_days) for c in counts if c.end <= made_at]
    per_component: dict[tuple[Component, str], list[WindowCount]] = defaultdict(list)
    for c in known:
        per_component[(c.component, c.stratum)].append(c)
    parts: dict[str, PartCalibration] = {}
    pooled: dict[str, PartCalibration] = {}
    dispersion: dict[str, float] = {}
    for (component, stratum), mine in per_component.items():
        here = calibration_key(component, "", stratum)
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for c in mine:
            totals[c.hardware_model][0] += c.observed
            totals[c.hardware_model][1] += c.expected
        observed = sum(t[0] for t in totals.values())
        expected = sum(t[1] for t in totals.values())
        theta0 = (prior.pooled_strength + observed) / (prior.pooled_strength + expected)
        pooled[here] = PartCalibration(factor=theta0, shape=prior.pooled_strength + observed)
        shape = spread_shape(list(totals.values()), theta0, prior)
        for model, (o, e) in totals.items():
            parts[calibration_key(component, model, stratum)] = (
                PartCalibration(factor=theta0, shape=pooled[here].shape)
                if math.isinf(shape)  # no spread between models beyond noise: all take the pooled factor
                else PartCalibration(factor=(shape + o) / (shape / theta0 + e), shape=shape + o)
            )
        means = [parts[calibration_key(component, c.hardware_model, stratum)].factor * c.expected for c in mine]
        dispersion[here] = window_dispersion(
            [c.observed for c in mine], means, prior.dispersion, prior.dispersion_weight
        )
    return Calibration(parts=parts, pooled=pooled, dispersion=dispersion, prior=prior)


def _aged(count: WindowCount, made_at: float, half_life_days: float | None) -> WindowCount:
    """``count`` weighted ``0.5 ** (age / half_life_days)``: rates drift as a fleet ages, so old windows count less."""
    if half_life_days is None:
        return count
    weight = 0.5 ** ((made_at - count.end) / half_life_days)
    return replace(count, expected=count.expected * weight, observed=count.observed * weight)


def spread_shape(totals: Sequence[Sequence[float]], theta0: float, prior: CalibrationPrior) -> float:
    """Gamma shape of the models' factors around ``theta0``: ``theta0^2 / tau^2`` where the spread
    ``tau^2`` is the method-of-moments estimate ``(sum(E (O/E - theta0)^2) - (G - 1) theta0) / sum(E)``
    averaged with the prior spread, weighted ``G - 1`` against ``prior.spread_weight``."""
    evidence = [(o, e) for o, e in totals if e > 0.0]
    g = len(evidence)
    prior_tau2 = (theta0 / math.sqrt(prior.spread_shape)) ** 2
    if g < 2:
        return prior.spread_shape
    total = sum(e for _, e in evidence)
    excess = sum(e * (o / e - theta0) ** 2 for o, e in evidence) - (g - 1) * theta0
    tau2_hat = max(0.0, excess / total)
    tau2 = (prior.spread_weight * prior_tau2 + (g - 1) * tau2_hat) / (prior.spread_weight + g - 1)
    return theta0**2 / tau2 if tau2 > 0.0 else math.inf


def window_dispersion(observed: Sequence[float], means: Sequence[float], prior: float, prior_weight: float) -> float:
    """Variance of the rate multiplier beyond Poisson, ``sum((O - mu)^2 - mu) / sum(mu^2)``, averaged with
    ``prior`` weighted by the windows' ``sum(mu^2)`` against ``prior_weight``; never below 0."""
    mu = np.asarray(means, dtype=float)
    o = np.asarray(observed, dtype=float)
    weight = float((mu**2).sum())
    if weight <= 0.0:
        return prior
    estimate = float(((o - mu) ** 2 - mu).sum()) / weight
    return max(0.0, (prior_weight * prior + weight * estimate) / (prior_weight + weight))


def apply_factor(probabilities: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Probabilities with their hazard multiplied by ``factor``."""
    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    return np.asarray(1.0 - np.power(1.0 - p, factor))


def mixing_variance(calibration: PartCalibration, dispersion: float) -> float:
    """Variance of the rate multiplier: the factor's posterior uncertainty and the window-to-window spread."""
    parameter = 0.0 if calibration.shape is None or math.isinf(calibration.shape) else 1.0 / calibration.shape
    return (1.0 + parameter) * (1.0 + dispersion) - 1.0


def _bins(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parts with probabilities within ``BIN_WIDTH`` of each other as one bin: (parts per bin, their mean probability)."""
    index = np.floor(np.log(np.maximum(p, BIN_FLOOR)) / math.log(1.0 + BIN_WIDTH)).astype(np.int64)
    labels, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
    return counts.astype(float), np.bincount(inverse, weights=p, minlength=len(labels)) / counts


@lru_cache(maxsize=4096)
def _multipliers(variance: float, nodes: int) -> np.ndarray:
    """Equal-probability quantiles of a gamma of mean 1 and ``variance``, moved to keep both exactly
    (cached: every site of a hardware model has the same variance, and the quantiles cost more
    than a small group's count)."""
    shape = 1.0 / variance
    q = gamma.ppf((np.arange(nodes) + 0.5) / nodes, shape, scale=1.0 / shape)
    q = np.clip(1.0 + (q - q.mean()) * math.sqrt(variance) / max(float(q.std()), 1e-300), 0.0, None)
    q.setflags(write=False)
    return np.asarray(q)


def mixed_count_pmf(probabilities: np.ndarray, variance: float, nodes: int = MIXTURE_NODES) -> np.ndarray:
    """Distribution of the count when every hazard is scaled by one gamma multiplier of mean 1 and
    ``variance`` (module doc); the exact Poisson-binomial when ``variance`` is 0.

    Per multiplier the count's generating function is evaluated at the roots of unity (a product
    over bins of parts with nearly equal probabilities) and inverted by one FFT, all multipliers at once.
    """
    from fleetpulse.models.forecast import poisson_binomial

    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    if variance <= 1e-12:
        return poisson_binomial(p)
    certain = int((p >= 1.0).sum())
    uncertain = p[(p > 0.0) & (p < 1.0)]
    if len(uncertain) == 0:
        return poisson_binomial(p)
    n, mean_p = _bins(uncertain)
    u = _multipliers(variance, nodes)
    scaled = 1.0 - np.power(1.0 - mean_p[:, None], u[None, :])  # (bins, nodes)
    top = (n[:, None] * scaled).sum(axis=0).max()
    size = 1 << max(3, math.ceil(math.log2(top + 12.0 * math.sqrt(top) + 13.0)))  # the largest node's tail
    size = min(size, 1 << math.ceil(math.log2(int(n.sum()) + 1)))
    z = np.exp(2j * np.pi * np.arange(size // 2 + 1) / size)  # the other half are the conjugates
    log_g = np.einsum("b,bkm->km", n, np.log(1.0 - scaled[:, :, None] + scaled[:, :, None] * z[None, None, :]))
    pmf = np.clip(np.fft.irfft(np.conj(np.exp(log_g)), n=size, axis=1), 0.0, None).mean(axis=0)
    pmf = np.concatenate([np.zeros(certain), pmf])
    keep = np.nonzero(pmf > 1e-12)[0]
    pmf = pmf[: keep[-1] + 1] if len(keep) else pmf[:1]
    return np.asarray(pmf / pmf.sum())


def convolve_all(pmfs: Sequence[np.ndarray]) -> np.ndarray:
    """Distribution of a sum of independent counts."""
    out = np.ones(1)
    for f in pmfs:
        out = np.convolve(out, f)
    keep = np.nonzero(out > 1e-12)[0]
    return out[: keep[-1] + 1] if len(keep) else out[:1]


def calibrated_count(
    probabilities: np.ndarray, strata: np.ndarray, component: Component, hardware_model: str, calibration: Calibration
) -> tuple[np.ndarray, np.ndarray]:
    """The corrected probabilities of one group's parts and the distribution of their count:
    per stratum its factor and overdispersed count, the strata's counts summed as independent."""
    p = np.asarray(probabilities, dtype=float).copy()
    pmfs = []
    for stratum in sorted(set(strata.tolist())):
        mine = strata == stratum
        fit = calibration.of(component, hardware_model, stratum)
        p[mine] = apply_factor(p[mine], fit.factor)
        variance = mixing_variance(fit, calibration.dispersion_of(component, stratum))
        pmfs.append(mixed_count_pmf(p[mine], variance))
    return p, convolve_all(pmfs)

"""Parts forecast over a synthetic fleet: time of ``forecast()`` at 10,000 and 100,000 devices.

Each device has a disk (90 % at the model's floor probability, the rest spread up to 30 %), a fan
scored "clear" and a battery (half with an end-of-life estimate), spread over 40 sites and 25
hardware models (1,200 groups per window, both windows). Three runs in the same process: the
exact Poisson-binomial by one dynamic-programming step per part (baseline), the exact one as
served without overdispersion (equal probabilities enter as one binomial each), and the served
overdispersed interval (the prior's spread and dispersion: one FFT per group); the ratios to
the baseline and the growth from 10k to 100k devices (linear is 10x) are printed side by side.

    python benchmarks/forecast.py
"""

from __future__ import annotations

import math
import random
import time

import numpy as np

from fleetpulse.contract import Component, DeviceKind
from fleetpulse.models import forecast as fc
from fleetpulse.models.forecast import forecast
from fleetpulse.models.forecast_rows import Calibration, PartRisk
from fleetpulse.models.forecast_settings import CalibrationPrior, ForecastSettings

EXACT = Calibration(prior=CalibrationPrior(spread_shape=math.inf, dispersion=0.0))


def fleet(devices: int, seed: int = 0) -> list[PartRisk]:
    rng = random.Random(seed)
    parts = []
    for i in range(devices):
        site, model = f"site-{i % 40}", f"model-{i % 25}"
        disk = 0.0175 if rng.random() < 0.9 else rng.random() * 0.3
        days = rng.uniform(0.0, 900.0) if rng.random() < 0.5 else None
        parts += [
            PartRisk(Component.DISK, site, model, DeviceKind.LAPTOP, disk, 30),
            PartRisk(Component.THERMAL, site, model, DeviceKind.LAPTOP, 0.02, 30),
            PartRisk(Component.BATTERY, site, model, DeviceKind.LAPTOP, 0.3, 30, days),
        ]
    return parts


def per_part_dp(probabilities: np.ndarray) -> np.ndarray:
    """The baseline: one dynamic-programming step per part."""
    ps = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    mean, var = float(ps.sum()), float((ps * (1.0 - ps)).sum())
    support = min(len(ps), math.ceil(mean + 12.0 * math.sqrt(var) + 12.0)) + 1
    pmf = np.zeros(support)
    pmf[0] = 1.0
    for p in ps:
        pmf[1:] = pmf[1:] * (1.0 - p) + pmf[:-1] * p
        pmf[0] *= 1.0 - p
    return pmf / pmf.sum()


def timed(parts: list[PartRisk], calibration: Calibration | None) -> float:
    start = time.perf_counter()
    forecast(parts, ForecastSettings(), calibration=calibration)
    return time.perf_counter() - start


def main() -> None:
    served = fc.poisson_binomial
    print(f"{'devices':>8} {'baseline s':>11} {'exact s':>8} {'ratio':>6} {'overdispersed s':>16} {'ratio':>6}")
    results = {}
    for devices in (10_000, 100_000):
        parts = fleet(devices)
        fc.poisson_binomial = per_part_dp  # type: ignore[assignment]
        baseline = timed(parts, EXACT)
        fc.poisson_binomial = served
        exact = timed(parts, EXACT)
        mixed = timed(parts, None)
        results[devices] = mixed
        print(
            f"{devices:>8} {baseline:>11.2f} {exact:>8.2f} {baseline / exact:>6.1f} {mixed:>16.2f} {baseline / mixed:>6.1f}"
        )
    print(f"growth of the overdispersed 10k -> 100k devices: {results[100_000] / results[10_000]:.1f}x (linear: 10x)")


if __name__ == "__main__":
    main()

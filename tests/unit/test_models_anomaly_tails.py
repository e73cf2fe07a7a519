"""The anomaly score's tail probabilities equal scipy's distribution objects value for value.

They replace ``poisson.sf``/``norm.sf`` on the worker's hot path, so every score must stay
bit-identical, including the edges scipy defines (negative counts, infinities, NaN).
"""

from __future__ import annotations

import math
import random

from scipy.stats import norm, poisson

from fleetpulse.models.anomaly import normal_sf, poisson_sf

EDGES = [0.0, -0.0, -1.0, -0.5, 0.5, 1e-300, 1e-4, 3.0, 1000.0, 1e300, math.inf, -math.inf, math.nan]


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_poisson_sf_matches_scipy() -> None:
    rng = random.Random(7)
    pairs = [(k, mu) for k in EDGES for mu in EDGES]
    pairs += [(rng.uniform(-2, 60), rng.uniform(0, 50)) for _ in range(2000)]
    pairs += [(float(rng.randint(0, 50)), 10 ** rng.uniform(-5, 3)) for _ in range(2000)]
    mismatches = [(k, mu) for k, mu in pairs if not same(float(poisson.sf(k, mu)), poisson_sf(k, mu))]
    assert mismatches == []


def test_normal_sf_matches_scipy() -> None:
    rng = random.Random(7)
    xs = EDGES + [rng.gauss(0, 5) for _ in range(4000)] + [rng.uniform(-40, 40) for _ in range(1000)]
    assert [x for x in xs if not same(float(norm.sf(x)), normal_sf(x))] == []

"""What one call of the disk model's trees costs, by rows per call: flat and compiled evaluation vs scikit-learn.

The stream worker scores the devices of each batch in one call, so at a steady trickle of
reports a call holds a few drives. Prints CPU µs per call of the shipped disk
model's trees (both horizons) for scikit-learn's ``decision_function`` (the baseline, under
the same one-thread OpenMP limit the worker uses), for :mod:`fleetpulse.models.forest`'s numpy
evaluation and, where the native extension is built, for its compiled one (what the worker
serves with at every size); the ratio of scikit-learn's to what the worker serves with, and
whether all gave the same bits. The rows are the serving inputs of simulated drives' features
on the model's grid, with missing values.

    python benchmarks/tree_evaluation.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from fleetpulse.models import forest
from fleetpulse.models.disk_model import DiskRiskModel
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.threads import single_thread
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.processing import compiled_forest

try:
    from fleetpulse.streams import _native
except ImportError:
    _native = None  # type: ignore[assignment]


def cpu_per_call(call: Callable[[], object], budget_s: float) -> float:
    """Best of three CPU-time rounds, each repeating ``call`` for about ``budget_s / 3``."""
    started = time.process_time()
    call()
    once = max(time.process_time() - started, 1e-6)
    repeat = max(3, int(budget_s / 3 / once))
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(repeat):
            call()
        best = min(best, (time.process_time() - started) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16,64,128,256,1024", help="rows per call, comma-separated")
    parser.add_argument("--budget", type=float, default=0.6, help="CPU seconds per measurement")
    args = parser.parse_args()

    disk = load_scorers(ServerSettings().models).champions[0]
    models = [m for m in getattr(disk, "models", {}).values() if isinstance(m, DiskRiskModel)]
    if not models:
        raise SystemExit(f"the configured disk champion {disk.name} has no trees")
    sizes = [int(size) for size in args.sizes.split(",")]
    rng = np.random.default_rng(1)
    features = rng.gamma(0.3, 20.0, size=(max(sizes), len(DISK_FEATURES)))
    features[rng.random(features.shape) < 0.1] = np.nan
    rows = [model._tree_input(features) for model in models]
    flats = [flat for model in models if (flat := forest.flat_forest(model.trees_)) is not None]
    if len(flats) != len(models):
        raise SystemExit(f"{disk.name}'s trees are left to scikit-learn (categorical splits): nothing to compare")
    compiled = _native is not None
    if compiled:  # as the worker's processor does: forest.decision_function then serves compiled
        forest.use_compiler(compiled_forest)
    served_by = "compiled" if compiled else f"flat up to {forest.SMALL_CALL_ROWS} rows, then scikit-learn"
    print(f"disk model {disk.name}: {len(models)} horizons; the worker serves with: {served_by}")
    print(f"{'rows':>6} {'scikit-learn µs':>16} {'flat µs':>9} {'compiled µs':>12} {'ratio':>6}  same bits")
    for size in sizes:

        def sklearn_call(size: int = size) -> list[np.ndarray]:
            with single_thread():
                return [model.trees_.decision_function(x[:size]) for model, x in zip(models, rows, strict=True)]

        def flat_call(size: int = size) -> list[np.ndarray]:
            return [f.decision_function(x[:size]) for f, x in zip(flats, rows, strict=True)]

        def compiled_call(size: int = size) -> list[np.ndarray]:
            return [forest.decision_function(model.trees_, x[:size]) for model, x in zip(models, rows, strict=True)]

        results = [sklearn_call(), flat_call(), *([compiled_call()] if compiled else [])]
        same = all(a.tobytes() == b.tobytes() for other in results[1:] for a, b in zip(results[0], other, strict=True))
        baseline, flat = cpu_per_call(sklearn_call, args.budget), cpu_per_call(flat_call, args.budget)
        native = cpu_per_call(compiled_call, args.budget) if compiled else float("nan")
        served = native if compiled else (flat if size <= forest.SMALL_CALL_ROWS else baseline)
        print(
            f"{size:6d} {1e6 * baseline:16.0f} {1e6 * flat:9.0f} {1e6 * native:12.0f} {baseline / served:6.1f}  {same}"
        )


if __name__ == "__main__":
    main()

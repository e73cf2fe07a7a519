"""Regenerate the served battery interval factors from the real histories.

``python -m fleetpulse.models.battery_calibration [BATTERY_DIR]`` prints the ``FACTORS``
constant of :mod:`~fleetpulse.models.battery_interval`, fitted on every real series;
paste it there after changing the estimator, the bins or the data (the unit test that
compares the constant with :func:`served_factors` fails until then).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleetpulse.models.battery_eval import BatteryResult, evaluate_series, load_real
from fleetpulse.models.battery_interval import BinFactors, fit_factors

DEFAULT_BATTERY_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "battery"


def served_factors(battery_dir: Path) -> tuple[BinFactors, ...]:
    """The factors fitted on the replayed predictions of every real history in ``battery_dir``."""
    result = BatteryResult()
    for series in load_real(battery_dir):
        evaluate_series(series, result)
    return fit_factors(result.records)


def main() -> None:
    battery_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_BATTERY_DIR
    print("FACTORS = (")
    for f in served_factors(battery_dir):
        edge = "math.inf" if f.up_to_days == float("inf") else repr(f.up_to_days)
        print(f"    BinFactors({edge}, {f.low!r}, {f.high!r}, {f.series}),")
    print(")")


if __name__ == "__main__":
    main()

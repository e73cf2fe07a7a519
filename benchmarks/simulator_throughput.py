"""How fast the fleet simulator generates reports for a large fleet, and what it costs in memory.

Prints: profile build time and memory for N devices, reports/s for one live round of the
whole fleet (generation only, and generation + JSON encoding), and reports/s of the
time-ordered ``reports()`` iterator over a few simulated days. The baseline, measured
side by side, is re-validating and encoding one fixed report: the cost floor of any
producer that builds contract records, so the ratio shows the simulator's own overhead.

    python benchmarks/simulator_throughput.py --devices 100000
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from datetime import datetime, timedelta

from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.compat import UTC
from fleetpulse.contract import HealthReport, encode


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc); the profile table's real footprint."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3, help="days for the reports() pass")
    parser.add_argument("--ordered-devices", type=int, default=10_000, help="fleet size for the reports() pass")
    args = parser.parse_args()
    start = datetime(2025, 1, 1, tzinfo=UTC)

    gc.collect()
    before = _current_rss_mb()
    t0 = time.perf_counter()
    sim = FleetSimulator(args.devices, 1, start, 365, report_interval=timedelta(minutes=1))
    build_s = time.perf_counter() - t0
    gc.collect()
    print(
        f"profiles: {args.devices:,} devices built in {build_s:.2f} s, "
        f"RSS +{_current_rss_mb() - before:.0f} MB ({(_current_rss_mb() - before) * 1e6 / args.devices:.0f} B/device)"
    )

    now = start + timedelta(days=100)
    t0 = time.perf_counter()
    n = sum(1 for _ in sim.live_reports(now))
    gen_s = time.perf_counter() - t0
    print(f"live round (generate): {n:,} reports in {gen_s:.2f} s = {n / gen_s:,.0f} reports/s")

    t0 = time.perf_counter()
    nbytes = 0
    sample: HealthReport | None = None
    for report in sim.live_reports(now + timedelta(minutes=1)):
        nbytes += len(encode(report))
        sample = report
    enc_s = time.perf_counter() - t0
    print(
        f"live round (generate+encode): {n:,} reports in {enc_s:.2f} s = {n / enc_s:,.0f} reports/s, "
        f"{nbytes / n:.0f} B/report; 100k devices x 1/min needs {100_000 / 60:,.0f} reports/s"
    )

    assert sample is not None
    payload = sample.model_dump()
    t0 = time.perf_counter()
    for _ in range(20_000):
        encode(HealthReport.model_validate(payload))
    base_rate = 20_000 / (time.perf_counter() - t0)
    print(
        f"baseline (validate+encode one fixed report): {base_rate:,.0f} reports/s; simulator/baseline = {n / enc_s / base_rate:.2f}"
    )

    ordered = FleetSimulator(args.ordered_devices, 1, start, args.days)
    t0 = time.perf_counter()
    m = sum(1 for _ in ordered.reports())
    ord_s = time.perf_counter() - t0
    print(
        f"reports(): {args.ordered_devices:,} devices x {args.days} days = {m:,} reports in {ord_s:.2f} s = {m / ord_s:,.0f} reports/s"
    )
    print(f"peak RSS: {_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

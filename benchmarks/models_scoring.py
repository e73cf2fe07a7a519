"""What per-device state and scoring cost the stream worker.

Prints, for a simulated fleet after ``--days`` daily reports: state JSON bytes per device
(mean/max), state updates per second (pure ``apply_report`` with its deep copy vs
``apply_report_in_place``), state JSON decode+encode per second (the Faust table round
trip), and states scored per second for every scorer of the rule set and, when
``--registry`` holds a trained champion, of the trained set. The baseline, measured side by
side, is the Backblaze rule scorer: the ratio shows what the trained model costs on top.

    python benchmarks/models_scoring.py --devices 500 --days 60 --registry .local/models
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from fleetpulse.agents.simulator import FleetMix, FleetSimulator
from fleetpulse.models.registry import load_scorers, rule_scorers
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState, apply_report, apply_report_in_place


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--registry", type=Path, default=Path(".local/models"))
    args = parser.parse_args()

    mix = FleetMix(laptop=0.6, desktop=0.4, phone=0.0, tablet=0.0)
    sim = FleetSimulator(
        devices=args.devices, seed=args.seed, start=datetime(2026, 1, 1, tzinfo=UTC), days=args.days, mix=mix
    )
    reports = list(sim.reports())
    states: dict[str, DeviceState] = {}
    started = time.perf_counter()
    for report in reports:
        state = states.get(report.device_id) or DeviceState(device_id=report.device_id)
        states[report.device_id] = apply_report_in_place(state, report)
    in_place = len(reports) / (time.perf_counter() - started)
    sample = reports[: min(len(reports), 20_000)]
    started = time.perf_counter()
    for report in sample:
        apply_report(states[report.device_id], report)
    pure = len(sample) / (time.perf_counter() - started)
    blobs = [s.model_dump_json() for s in states.values()]
    started = time.perf_counter()
    for blob in blobs:
        DeviceState.model_validate_json(blob).model_dump_json()
    roundtrip = len(blobs) / (time.perf_counter() - started)
    sizes = [len(b) for b in blobs]
    print(f"{len(reports):,} reports, {len(states):,} devices, {args.days} days")
    print(f"state JSON bytes per device: mean {sum(sizes) / len(sizes):,.0f}, max {max(sizes):,}")
    print(f"state updates/s: in place {in_place:,.0f}, pure (deep copy) {pure:,.0f}")
    print(f"state JSON decode+encode/s: {roundtrip:,.0f}")

    fleet = list(states.values())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    baseline_rate = None
    sets = [("rules", rule_scorers())]
    trained = load_scorers(ModelSettings(registry_dir=args.registry))
    if trained.describe() != rule_scorers().describe():
        sets.append(("registry", trained))
    for label, scorer_set in sets:
        for scorer in [*scorer_set.champions, *scorer_set.challengers]:
            started = time.perf_counter()
            for i in range(0, len(fleet), 500):
                scorer.score_batch(fleet[i : i + 500], now)
            rate = len(fleet) / (time.perf_counter() - started)
            if scorer.name == "disk-rule" and baseline_rate is None:
                baseline_rate = rate
            ratio = f" ({baseline_rate / rate:.1f}x the disk rule's cost)" if baseline_rate else ""
            print(f"[{label}] {scorer.name}:{scorer.version} states scored/s: {rate:,.0f}{ratio}")


if __name__ == "__main__":
    main()

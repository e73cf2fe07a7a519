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
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from fleetpulse.agents.simulator import FleetMix, FleetSimulator
from fleetpulse.compat import UTC
from fleetpulse.models.registry import load_scorers, rule_scorers
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState, apply_report, apply_report_in_place


def call_costs(sizes: list[int], devices: int, rounds: int) -> dict[int, float]:
    """CPU µs per ``ScorerSet.score`` call (best of 3) at each call size, with the configured models."""
    from stream_common import Fleet

    from fleetpulse.contract import Topics
    from fleetpulse.settings import ServerSettings
    from fleetpulse.streams.app import tune_gc
    from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord

    settings = ServerSettings()
    topics = Topics(prefix="profile.")
    scorers = load_scorers(settings.models)
    processor = Processor(settings.streams, topics, scorers, settings.alerts.policy)
    records = [
        RawRecord(t, 0, i, k, v, h) for i, (t, k, v, h) in enumerate(Fleet.simulate(devices, topics).rounds(rounds))
    ]
    table: dict[str, bytes] = {}
    now = datetime.now(UTC)

    def lookup(_index: int, device_id: str) -> DeviceRecord | None:
        raw = table.get(device_id)
        return None if raw is None else DeviceRecord.from_bytes(raw)

    for start in range(0, len(records), 2000):
        for device_id, record in processor.process_batch(records[start : start + 2000], lookup, now).records.items():
            table[device_id] = record.to_bytes()
    states = [s for s in (DeviceRecord.from_bytes(raw).state for raw in table.values()) if s.last_collected_at]
    tune_gc(settings.streams)
    costs = {}
    for size in sizes:
        calls = max(3, min(300, 3000 // size))
        batches = [states[(i * size) % max(1, len(states) - size) :][:size] for i in range(calls)]
        for batch in batches:  # warm: lazily built model parts, caches
            scorers.score(batch, now)
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for batch in batches:
                scorers.score(batch, now)
            best = min(best, time.process_time() - started)
        costs[size] = 1e6 * best / calls
    return costs


def measure_in(checkout: Path | None, args: argparse.Namespace) -> dict[int, float]:
    """``call_costs`` in a fresh process importing ``fleetpulse`` from ``checkout`` (None: as this process does)."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())
    command = [sys.executable, __file__, "--call-sizes", args.call_sizes, "--devices", str(args.devices)]
    out = subprocess.run([*command, "--rounds", str(args.rounds), "--json"], env=env, check=True, capture_output=True)
    return {int(size): us for size, us in json.loads(out.stdout.splitlines()[-1]).items()}


def call_sizes(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.call_sizes.split(",")]
    if args.json:
        print(json.dumps(call_costs(sizes, args.devices, args.rounds)))
        return
    ours: dict[int, float] = {}
    base: dict[int, float] | None = {} if args.baseline else None
    for _ in range(args.repeat):  # alternating, so both see the machine's load alike
        for size, us in measure_in(None, args).items():
            ours[size] = min(us, ours.get(size, us))
        if base is not None:
            for size, us in measure_in(args.baseline, args).items():
                base[size] = min(us, base.get(size, us))
    print(f"CPU µs per ScorerSet.score call, best of {3 * args.repeat}, {args.devices} devices' states")
    for size in sizes:
        line = f"{size:5d} states: {ours[size]:9.0f} µs/call {ours[size] / size:7.1f} µs/state"
        if base is not None:
            line += f"   baseline {base[size]:9.0f} µs/call   ratio {ours[size] / base[size]:.2f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--registry", type=Path, default=Path(".local/models"))
    parser.add_argument("--call-sizes", help="comma-separated states per call: the cost of one ScorerSet.score call")
    parser.add_argument("--rounds", type=int, default=3, help="--call-sizes: reports per device before scoring")
    parser.add_argument("--baseline", type=Path, help="--call-sizes: a checkout to measure side by side")
    parser.add_argument("--repeat", type=int, default=3, help="--call-sizes: processes per checkout, alternating")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.call_sizes:
        call_sizes(args)
        return

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

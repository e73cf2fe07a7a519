"""The processor with and without the native fast path, in-process, over the same records.

Feeds :meth:`Processor.process_batch` the records ``stream_profile.py`` feeds it (inventory,
enrolments, then ``--rounds`` reports per device one minute apart), with the table as bytes
between batches and the worker's decoded-state cache in front of it (a record the Python path
stored is served back undecoded while the table holds its bytes; only those bytes, or the fast
path's own, are handed to the fast path). Runs both processors ``--repeat`` times, alternating,
and prints the fastest CPU µs per event of each, their ratio, how many reports the fast path took,
and whether every output (dead letters, counts, scores, alerts, feature-log records, TSDB lines,
table values) is identical::

    python benchmarks/fast_path.py --devices 5000 --rounds 5

Exits 1 if any output differs. Needs the extension (``make native``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from datetime import datetime

from stream_common import Fleet
from stream_profile import batches

from fleetpulse.compat import UTC
from fleetpulse.contract import Topics, encode
from fleetpulse.models.registry import ScorerSet, load_scorers
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import tune_gc
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord


def run(processor: Processor, work: list[list[RawRecord]], now: datetime) -> tuple[float, int, dict[str, str]]:
    """CPU seconds of every batch (processing and table writes), reports the fast path took, output digests."""
    table: dict[str, bytes] = {}
    cache: dict[str, tuple[bytes, DeviceRecord | None]] = {}
    digests = {kind: hashlib.sha256() for kind in ("dead_letters", "counts", "scores", "alerts", "features", "lines")}
    folded = 0
    fast = processor.fast_path is not None

    def lookup(_index: int, device_id: str) -> DeviceRecord | None:
        raw = table.get(device_id)
        if raw is None:
            return None
        entry = cache.pop(device_id, None)
        if entry is not None and entry[0] is raw and entry[1] is not None:
            return entry[1]
        return DeviceRecord.from_bytes(raw)

    def stored(_index: int, device_id: str) -> bytes | None:
        raw = table.get(device_id)
        entry = cache.get(device_id)
        return raw if raw is not None and entry is not None and entry[0] is raw else None

    spent = 0.0
    for batch in work:
        started = time.process_time()
        result = processor.process_batch(batch, lookup, now, None, stored if fast else None)
        for device_id, record in result.records.items():
            table[device_id] = value = record.to_bytes()
            cache[device_id] = (value, record)
        for device_id, value in result.encoded.items():
            if device_id not in result.records:
                table[device_id] = value
                cache[device_id] = (value, None)
        spent += time.process_time() - started
        folded += len(result.collected_us)
        lines = [point.to_line_protocol().encode() for point in result.points] + result.lines
        for kind, items in (
            ("dead_letters", [encode(x) for x in result.dead_letters]),
            ("scores", [encode(x) for x in result.scores]),
            ("alerts", [encode(x) for x in result.alerts]),
            ("features", [encode(x) for x in result.features]),
            ("lines", lines),
            ("counts", [f"{k}={v}".encode() for k, v in result.counts.items()]),
        ):
            for item in sorted(items):
                digests[kind].update(item + b"\n")
    table_digest = hashlib.sha256()
    for device_id in sorted(table):
        table_digest.update(device_id.encode() + b"\0" + table[device_id])
    return spent, folded, {**{k: d.hexdigest() for k, d in digests.items()}, "table": table_digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each processor, alternating")
    args = parser.parse_args()
    settings = ServerSettings()
    tune_gc(settings.streams)
    topics = Topics(prefix="fast.")
    scorers: ScorerSet = load_scorers(settings.models)
    fleet = Fleet.simulate(args.devices, topics)
    work = batches(fleet, args.rounds, args.batch)
    events = sum(len(batch) for batch in work)
    now = datetime.now(UTC)
    python_only = settings.streams.model_copy(update={"native_fast_path": False})
    python = Processor(python_only, topics, scorers, settings.alerts.policy)
    native = Processor(settings.streams, topics, scorers, settings.alerts.policy)
    if native.fast_path is None:
        sys.exit("the native extension is not built here: `make native`")
    best = {"python": float("inf"), "native": float("inf")}
    outputs: dict[str, dict[str, str]] = {}
    folded = 0
    for attempt in range(args.repeat):
        order = (
            (("python", python), ("native", native)) if attempt % 2 == 0 else (("native", native), ("python", python))
        )
        for name, processor in order:
            spent, taken, digests = run(processor, work, now)
            best[name] = min(best[name], spent)
            outputs[name] = digests
            if name == "native":
                folded = taken
    per_event = {name: 1e6 * spent / events for name, spent in best.items()}
    print(f"{args.devices} devices, {args.rounds} rounds: {events} events, {folded} reports took the fast path")
    print(
        f"CPU µs per event, fastest of {args.repeat}: python {per_event['python']:.1f}, native {per_event['native']:.1f}"
    )
    print(f"native / python: {per_event['native'] / per_event['python']:.3f}")
    differ = [kind for kind in outputs["python"] if outputs["python"][kind] != outputs["native"][kind]]
    print("outputs identical" if not differ else f"outputs differ: {', '.join(differ)}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()

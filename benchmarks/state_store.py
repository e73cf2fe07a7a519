"""What the worker's RocksDB state store costs per write batch, with and without RocksDB's write-ahead log.

The worker writes every changed device's table value once per batch and partition, as one
RocksDB write batch (``BatchRocksDBStore.write_batch``). Values here are real table values:
simulated PCs after ``--days`` daily reports, encoded as the worker stores them. Each variant
writes the same ``--batches`` batches of ``--batch`` values into a fresh database opened the
way Faust opens the worker's partition databases, then closes it (RocksDB flushes the memtable
on close, so flushing and compaction are in the bill). CPU time of the whole process, the
store's background threads included; best of ``--repeat``, the variants alternating.

    python benchmarks/state_store.py --batch 30 --batches 2000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from state_codec import fleet_records

from fleetpulse.streams.faust_internals import unlogged_writes


def write_all(path: Path, batches: list[list[tuple[bytes, bytes]]], logged: bool) -> float:
    """CPU seconds to write ``batches`` into a fresh database at ``path`` and close it."""
    started = time.process_time()
    db = RocksDBOptions(use_rocksdict=True).open(path)
    if not logged:
        db.set_write_options(unlogged_writes())
    for items in batches:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        db.write(batch)
    db.close()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=300, help="distinct simulated devices (values are reused)")
    parser.add_argument("--days", type=int, default=60, help="days of history in each device's value")
    parser.add_argument("--batch", type=int, default=30, help="values per write batch")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    values = [record.to_bytes() for record in fleet_records(args.devices, args.days, seed=7)]
    batches = [
        [
            (f"device-{(b * args.batch + i) % 100_000:06d}".encode(), values[(b * args.batch + i) % len(values)])
            for i in range(args.batch)
        ]
        for b in range(args.batches)
    ]
    size = sum(len(v) for v in values) / len(values)
    writes = args.batch * args.batches
    best = {True: float("inf"), False: float("inf")}
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-state-store-"))
    try:
        for run in range(args.repeat):
            for logged in (True, False):
                path = root / f"{run}-{logged}"
                best[logged] = min(best[logged], write_all(path, batches, logged))
                shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{writes} values of {size:,.0f} bytes on average, {args.batch} per write batch, best of {args.repeat}")
    for logged in (True, False):
        per_batch = 1e6 * best[logged] / args.batches
        print(
            f"  {'write-ahead log' if logged else 'no log (worker)':16s} {per_batch:8.1f} CPU µs per batch"
            f"  {1e6 * best[logged] / writes:7.1f} per value"
        )
    print(f"  ratio no log / log: {best[False] / best[True]:.2f}")


if __name__ == "__main__":
    main()

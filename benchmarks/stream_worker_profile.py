"""Where the real worker's CPU goes, stage by stage: one ``fleetpulse worker`` on the real Kafka, sampled by py-spy.

``stream_profile.py`` times the pure processor in-process; this samples the whole worker
process while it drains the throughput benchmark's records (inventory, enrolments, then
``--rounds`` reports per device), so the Faust layer, Kafka I/O, publishing and state writes
are in the picture too. Each sampled stack is charged to the first stage below whose
function it contains, and the share is printed with the µs/event it stands for. Sampling at
``--rate`` Hz slows the worker a little: compare shares, not the absolute µs, with
``stream_throughput.py``. Needs ``py-spy`` on the PATH (``pip install py-spy``).

    python benchmarks/stream_worker_profile.py --devices 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from stream_common import (
    Fleet,
    add_kafka_args,
    cpu_seconds,
    create_topics,
    kafka_settings,
    publish_rounds,
    start_worker,
    wait_processed,
)

from fleetpulse.contract import Topics

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (stage, functions whose presence in a stack charges it), first match wins
    ("scoring flushed early by a device's next record", ("Processor._one&Processor._score",)),
    ("scoring: models, alert policy, feature log", ("Processor._score",)),
    ("report decode and validation", ("Processor._decode_reports", "decode_report")),
    ("fold report into state", ("apply_report_in_place",)),
    ("report TSDB points", ("report_points",)),
    ("device authentication (HMAC)", ("authentication_failure",)),
    (
        "state lookups (table read, decoded cache)",
        ("Pipeline._lookup.<locals>.lookup", "Pipeline._validated.<locals>.validated"),
    ),
    ("native fast path: decode, authenticate, fold, encode, lines", ("Processor._folded",)),
    ("other processor work", ("Processor.process_batch",)),
    ("state encode", ("DeviceRecord.to_bytes",)),
    ("encode and publish scores, alerts, features", ("Pipeline._handle.<locals>.<listcomp>", "publish")),
    ("state write: RocksDB batch + changelog", ("DeviceTable.write_batch",)),
    ("rest of the batch handler (cache, metrics)", ("Pipeline._handle",)),
)
DELIVERY = "fetch, Faust delivery, acks, producer I/O"
WAITING = ("EpollSelector.select", "SelectSelector.select", "PollSelector.select")
"""Leaf frames of a thread blocked in the event loop's select: sampled, but no CPU spent."""


def stage_of(functions: set[str]) -> str:
    for stage, markers in STAGES:
        for marker in markers:
            if all(part in functions for part in marker.split("&")):
                return stage
    return DELIVERY


def charge(raw_stacks: Path) -> Counter[str]:
    """On-CPU samples per stage from py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    samples: Counter[str] = Counter()
    for line in raw_stacks.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame.split(" (", 1)[0] for frame in stack.split(";")]
        if frames[-1] in WAITING:
            continue
        functions = set(frames)
        samples[stage_of(functions)] += int(count)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kafka_args(parser)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not on the PATH: pip install py-spy")

    kafka = kafka_settings(args.bootstrap)
    create_topics(kafka)
    fleet = Fleet.simulate(args.devices, Topics(prefix=kafka.topic_prefix))
    total = publish_rounds(kafka, fleet, args.rounds)
    print(f"published {total} records ({args.devices} devices, {args.rounds} rounds)", flush=True)

    worker = start_worker(kafka, app_id=f"fleetpulse-profile-{int(time.time())}")
    out = Path(tempfile.mkdtemp(prefix="fleetpulse-profile-")) / "stacks.txt"
    try:
        worker.wait_ready(timeout=120)
        assert worker.proc is not None
        cpu_at_start = cpu_seconds([worker])  # ready and idle: start-up is not charged to the events
        sampler = subprocess.Popen(
            [spy, "record", "-p", str(worker.proc.pid), "-r", str(args.rate), "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_processed([worker], total, timeout=3600)
        cpu_s = cpu_seconds([worker]) - cpu_at_start
        sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        sampler.wait(timeout=60)
    finally:
        worker.stop()

    us_per_event = 1e6 * cpu_s / total
    samples = charge(out)
    count = sum(samples.values())
    print(f"worker under sampling: {us_per_event:.1f} CPU µs/event over {total} events, {count} samples")
    print(f"{'stage':48s} {'share':>6s} {'µs/event':>9s}")
    for stage in [name for name, _ in STAGES] + [DELIVERY]:
        share = samples[stage] / count if count else 0.0
        print(f"{stage:48s} {share:6.1%} {share * us_per_event:9.1f}")


if __name__ == "__main__":
    main()

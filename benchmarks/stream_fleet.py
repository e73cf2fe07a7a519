"""A 100,000-device fleet through real Kafka and real workers: state recovery and end-to-end latency.

Phases (one run):
1. preload: inventory + one report per device; workers build the state of every device;
2. recovery: kill -9 the worker and restart it (a) on its own RocksDB directory, (b) on an empty
   one (a replacement machine: everything restored from the changelog); time until it serves
   again (health: partitions assigned, recovery done) and until it processed a new report;
3. latency at 1x (devices/60 reports/s: one report per device per minute) and at 10x: reports
   stamped with the send time. Two latencies: ``score`` = arrival of the report's risk score on
   the scores topic minus ``collected_at`` (the agent timestamp), for the reports that were
   scored; ``processed`` = the workers' histogram of ``collected_at`` to "effects durable" for
   every report (state, metrics, any score/alert), interpolated from its buckets.
   ``--rescore-interval PT0S`` scores every report (worst case); the default is production's
   score-on-change. The workers' CPU per report at each load (idle polling included) sits beside
   their CPU per record while draining the preload: a worker that keeps up with a trickle of
   reports handles small batches, whose fixed costs a drain spreads over thousands of records.
   With ``--tsdb-url`` the workers write their points to that TSDB, as in production (encoding
   a report's points costs about 20 µs on the Python path; the native fast path writes them itself).

Usage: python benchmarks/stream_fleet.py --bootstrap 127.0.0.1:19092 --devices 100000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer
from record import record
from stream_common import (
    Fleet,
    add_kafka_args,
    add_tsdb_arg,
    cpu_seconds,
    create_topics,
    free_port,
    kafka_settings,
    producer,
    start_worker,
    tsdb_streams,
)

from fleetpulse.compat import UTC, fromisoformat
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.process import WorkerProcess, wait_caught_up
from fleetpulse.streams.settings import StreamSettings

COLLECTED = re.compile(rb'"collected_at":"([^"]+)"')
SEQ = re.compile(rb'"report_seq":(\d+)')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def score_latencies(bootstrap: str, topic: str, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Child process: first score of each (device, report) -> arrival time minus collected_at."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
    consumer.poll(timeout_ms=2000)  # join: positions at the end before the load starts
    out.put("ready")
    seen: set[tuple[bytes, bytes]] = set()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200, max_records=10_000).values():
            arrived = datetime.now(UTC)
            for m in messages:
                seq, at = SEQ.search(m.value), COLLECTED.search(m.value)
                if seq is None or at is None or (m.key, seq.group(1)) in seen:
                    continue
                seen.add((m.key, seq.group(1)))
                latencies.append((arrived - fromisoformat(at.group(1).decode())).total_seconds())
    consumer.close()
    out.put(latencies)


def latency_histogram(workers: list[WorkerProcess]) -> dict[float, float]:
    """Cumulative bucket counts of fleetpulse_stream_event_latency_seconds, summed over workers."""
    buckets: dict[float, float] = {}
    for worker in workers:
        for line in worker.metrics().splitlines():
            if line.startswith("fleetpulse_stream_event_latency_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.split()[-1])
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Linear interpolation inside the bucket that holds the q-quantile (as PromQL does)."""
    bounds = sorted(after)
    cumulative = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def run_load(
    kafka: KafkaSettings,
    fleet: Fleet,
    workers: list[WorkerProcess],
    rate: float,
    seconds: float,
    first_seq: int,
    drain_s: float,
) -> dict[str, float]:
    """Send ``rate`` reports/s for ``seconds`` (round-robin over the fleet), measure score latency."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(
        target=score_latencies, args=(kafka.bootstrap_servers, fleet.topics.scores, seconds + drain_s, queue)
    )
    child.start()
    assert queue.get(timeout=60) == "ready"
    before = latency_histogram(workers)
    cpu_before = cpu_seconds(workers)
    prod = producer(kafka)
    templates = fleet.templates
    sent, tick = 0, 0.01
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        if due > sent:
            at = datetime.now(UTC)
            stamp = b'"collected_at":"' + at.isoformat().replace("+00:00", "Z").encode() + b'"'
            for n in range(sent, due):
                topic, key, value, headers = fleet.stamped(n, first_seq + n // len(templates), stamp)
                prod.send(topic, key=key, value=value, headers=headers)
            sent = due
        else:
            time.sleep(tick)
    prod.flush()
    achieved = sent / (time.monotonic() - started)
    prod.close()
    latencies: list[float] = queue.get(timeout=seconds + drain_s + 120)
    child.join()
    after = latency_histogram(workers)
    cpu = cpu_seconds(workers) - cpu_before
    processed = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    return {
        "worker_cpu_us_per_report": round(1e6 * cpu / max(processed, 1.0), 1),
        "processed_within_window": int(processed),
        "processed_p50_s": round(histogram_quantile(before, after, 0.50), 3),
        "processed_p99_s": round(histogram_quantile(before, after, 0.99), 3),
        "target_rate": rate,
        "achieved_rate": round(achieved),
        "reports": sent,
        "scored_reports_seen": len(latencies),
        "score_p50_s": round(percentile(latencies, 0.50), 3),
        "score_p99_s": round(percentile(latencies, 0.99), 3),
        "score_max_s": round(max(latencies, default=float("nan")), 3),
    }


def time_recovery(
    kafka: KafkaSettings,
    fleet: Fleet,
    worker: WorkerProcess,
    data_dir: Path,
    web_port: int,
    seq: int,
    **streams: object,
) -> dict[str, float]:
    """kill -9 ``worker``, restart on ``data_dir``; seconds until serving and until a new report is processed."""
    worker.kill9()
    started = time.monotonic()
    restarted = start_worker(kafka, data_dir=data_dir, web_port=web_port, **streams)
    restarted.wait_ready(timeout=600)
    ready = time.monotonic() - started
    before = (restarted.health() or {}).get("events_total", 0)
    prod = producer(kafka)
    stamp = b'"collected_at":"' + datetime.now(UTC).isoformat().replace("+00:00", "Z").encode() + b'"'
    topic, key, value, headers = fleet.stamped(0, seq, stamp)
    prod.send(topic, key=key, value=value, headers=headers)
    prod.flush()
    prod.close()
    restarted.wait_events(before + 1, timeout=600)
    worker.proc = restarted.proc  # the caller keeps managing one process
    return {"ready_s": round(ready, 1), "processing_s": round(time.monotonic() - started, 1)}


def stream_overrides(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` options as ``[streams]`` overrides; an unknown name stops here, not in the worker."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in StreamSettings.model_fields:
            parser.error(f"--set {pair!r}: expected NAME=VALUE with NAME a [streams] setting")
        overrides[name] = value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kafka_args(parser)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the latency phases")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load phase")
    parser.add_argument("--rescore-interval", default=None, help="ISO 8601 duration, e.g. PT0S; default: production")
    parser.add_argument("--skip-recovery", action="store_true", help="only the latency phases")
    parser.add_argument("--multipliers", default="1,10", help="load levels as multiples of devices/60 reports/s")
    add_tsdb_arg(parser)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a [streams] setting of the workers, e.g. batch_within_s=0.2 (repeatable): measure a tuning",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]

    kafka = kafka_settings(args.bootstrap)
    topics = Topics(prefix=kafka.topic_prefix)
    create_topics(kafka)
    fleet = Fleet.simulate(args.devices, topics)
    results: dict[str, object] = {"devices": args.devices, "reports_per_round": len(fleet.templates)}

    prod = producer(kafka)
    for topic, key, value, headers in [*fleet.preamble(), *fleet.payloads(0, datetime.now(UTC) - timedelta(minutes=5))]:
        prod.send(topic, key=key, value=value, headers=headers)
    prod.flush()
    prod.close()
    preload = len(fleet.inventory) + len(fleet.enrolments) + len(fleet.templates)

    streams: dict[str, object] = {
        "stats_interval_s": 5,
        **stream_overrides(parser, args.set),
        **tsdb_streams(args.tsdb_url),
    }
    if args.rescore_interval is not None:
        streams["rescore_interval"] = args.rescore_interval
    if args.set:
        results["settings"] = streams
    data_dir = Path(tempfile.mkdtemp(prefix="fleetpulse-bench-w1-"))
    port = free_port()
    first = start_worker(kafka, data_dir=data_dir, web_port=port, instance="bench-w1", **streams)
    try:
        first.wait_ready(timeout=120)
        started, cpu_started = time.monotonic(), cpu_seconds([first])
        wait_caught_up(kafka, f"{kafka.topic_prefix}fleetpulse", timeout=3600, poll_s=2)
        results["preload"] = {
            "records": preload,
            "seconds": round(time.monotonic() - started, 1),
            "worker_cpu_us_per_record": round(1e6 * (cpu_seconds([first]) - cpu_started) / preload, 1),
        }
        print("preload", results["preload"], flush=True)

        if not args.skip_recovery:
            results["recovery_local_rocksdb"] = time_recovery(
                kafka, fleet, first, data_dir, port, 1, instance="bench-w1", **streams
            )
            print("recovery (own RocksDB dir)", results["recovery_local_rocksdb"], flush=True)
            shutil.rmtree(data_dir)
            results["recovery_from_changelog"] = time_recovery(
                kafka, fleet, first, data_dir, port, 2, instance="bench-w1", **streams
            )
            print("recovery (empty dir, changelog only)", results["recovery_from_changelog"], flush=True)
        wait_caught_up(kafka, f"{kafka.topic_prefix}fleetpulse", timeout=600)

        others = [start_worker(kafka, instance=f"bench-w{i + 2}", **streams) for i in range(max(0, args.workers - 1))]
        try:
            for other in others:
                other.wait_ready(timeout=300)
            wait_caught_up(kafka, f"{kafka.topic_prefix}fleetpulse", timeout=600)
            seq = 3
            multipliers = [float(m) for m in args.multipliers.split(",")]
            for index, multiplier in enumerate(multipliers):
                rate = args.devices / 60.0 * multiplier
                result = run_load(kafka, fleet, [first, *others], rate, args.seconds, seq, drain_s=30.0)
                seq += int(rate * args.seconds) // len(fleet.templates) + 2
                results[f"latency_{multiplier:g}x"] = result
                print(f"latency at {multiplier:g}x ({args.workers} worker(s))", result, flush=True)
                if index < len(multipliers) - 1:
                    wait_caught_up(kafka, f"{kafka.topic_prefix}fleetpulse", timeout=1800, poll_s=2)
        finally:
            for other in others:
                other.stop()
    finally:
        first.stop()
    results["workers"] = args.workers
    results["rescore_interval"] = args.rescore_interval or "production default"
    results["tsdb"] = bool(args.tsdb_url)
    print(json.dumps(results))
    record("stream_fleet", results, load_at_start)


if __name__ == "__main__":
    main()

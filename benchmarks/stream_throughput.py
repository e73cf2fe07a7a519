"""Sustained events/s of the full stream pipeline vs a raw aiokafka consume-and-deserialize loop.

Both read the same messages from the real local Kafka in the same run:

* ceiling: one aiokafka consumer, ``decode_report``/``decode(DeviceInventory)`` per record, nothing else;
* Faust floors: a Faust app configured like the worker that only decodes each record and
  writes it to its RocksDB table (``faust_floor.py``), on stock Faust and on the worker's
  batch path: what the framework costs per event;
* pipeline: one ``fleetpulse worker`` process (RocksDB table, 12 partitions): validate, dedup,
  state, features, score (the configured models), alert policy, emit scores/alerts/dead letters,
  changelog writes, TSDB points built (sink ``none`` unless ``--tsdb-url``).

With ``--baseline-checkout DIR`` (the importable root of another fleetpulse version, e.g. an
export of an earlier commit) that version's worker also runs on the same records, in its own
consumer group: before and after in one run. A worker's CPU per event varies by about ±10 % from
one run to the next on a shared machine; ``--pairs N`` runs both workers N times, alternating
which goes first, and reports each one's median run and the median of the N paired ratios.

Usage: python benchmarks/stream_throughput.py --bootstrap 127.0.0.1:19092 --devices 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import faust_floor
from aiokafka import AIOKafkaConsumer
from record import record
from stream_common import (
    Fleet,
    add_kafka_args,
    add_tsdb_arg,
    create_topics,
    decode_input,
    kafka_settings,
    peak_rss_mib,
    publish_rounds,
    start_worker,
    tsdb_streams,
    wait_processed,
)

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics


async def ceiling(kafka: KafkaSettings, topics: Topics, total: int) -> tuple[float, float, int]:
    """(events/s, events per CPU second, records) of consume + deserialize, from the first record to the last."""
    consumer = AIOKafkaConsumer(
        topics.inventory,
        topics.health,
        topics.mobile,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"ceiling-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    seen, first, cpu_first = 0, None, 0.0
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, messages in batches.items():
                if first is None and messages:
                    first, cpu_first = time.perf_counter(), time.process_time()
                for m in messages:
                    decode_input(topics, tp.topic, m.value, m.headers)
                seen += len(messages)
        assert first is not None
        return seen / (time.perf_counter() - first), seen / (time.process_time() - cpu_first), seen
    finally:
        await consumer.stop()


@dataclass
class WorkerRun:
    rate: float
    cpu_rate: float
    metrics: str
    peak_rss_mib: float


def run_workers(
    kafka: KafkaSettings, total: int, count: int, extra_env: dict[str, str] | None = None, **streams: object
) -> WorkerRun:
    """``count`` worker processes over the published records; events/s first to last, events per CPU second."""
    workers = [start_worker(kafka, instance=f"bench-w{i + 1}", extra_env=extra_env, **streams) for i in range(count)]
    try:
        for worker in workers:
            worker.wait_ready(timeout=120)
        processed = wait_processed(workers, total, timeout=3600)
        metrics = "\n".join(worker.metrics() for worker in workers)
        peak = peak_rss_mib(workers)
    finally:
        for worker in workers:
            worker.stop()
    return WorkerRun(total / (processed.done - processed.first), total / processed.cpu_s, metrics, peak)


def median_run(runs: list[WorkerRun]) -> WorkerRun:
    """The run with the median CPU per event (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run.cpu_rate)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_kafka_args(parser)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="reports per device, one minute apart")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (the ratio is reported per process)")
    add_tsdb_arg(parser)
    parser.add_argument(
        "--baseline-checkout", type=Path, default=None, help="also measure the worker of this fleetpulse checkout"
    )
    parser.add_argument("--pairs", type=int, default=1, help="with --baseline-checkout: runs of each worker")
    parser.add_argument("--ceiling-runs", type=int, default=3, help="runs of the ceiling; the ratios use its median")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]

    kafka = kafka_settings(args.bootstrap)
    topics = Topics(prefix=kafka.topic_prefix)
    create_topics(kafka)
    fleet = Fleet.simulate(args.devices, topics)
    total = publish_rounds(kafka, fleet, args.rounds)
    print(
        f"published {total} records ({len(fleet.inventory)} inventory, {args.rounds} rounds) to {kafka.bootstrap_servers}"
    )

    # the ceiling's CPU per event varies from run to run as a worker's does: every ratio divides by its median
    ceilings = sorted(
        (asyncio.run(ceiling(kafka, topics, total)) for _ in range(args.ceiling_runs)), key=lambda c: c[1]
    )
    raw_rate, raw_cpu_rate, seen = ceilings[len(ceilings) // 2]
    print(
        f"ceiling  (aiokafka consume + pydantic decode), median of {len(ceilings)}: {raw_rate:10.0f} events/s "
        f"({raw_cpu_rate:.0f} per CPU second) over {seen} records "
        f"(CPU µs per event: {', '.join(f'{1e6 / c[1]:.1f}' for c in ceilings)})"
    )

    floor_rate, floor_cpu_rate = faust_floor.measure(kafka, topics, total, path="faust")
    print(
        f"Faust floor, stock (take_events, table[key] per event): {floor_rate:10.0f} events/s "
        f"({floor_cpu_rate:.0f} per CPU second) = {floor_rate / raw_rate:.1%} of the ceiling, "
        f"{floor_cpu_rate / raw_cpu_rate:.1%} CPU"
    )
    batch_rate, batch_cpu_rate = faust_floor.measure(kafka, topics, total, path="batch")
    print(
        f"Faust floor, batch path (the worker's):              {batch_rate:10.0f} events/s "
        f"({batch_cpu_rate:.0f} per CPU second) = {batch_rate / raw_rate:.1%} of the ceiling, "
        f"{batch_cpu_rate / raw_cpu_rate:.1%} CPU"
    )

    extra = tsdb_streams(args.tsdb_url)
    # PYTHONSAFEPATH: the worker runs `python -c`, which would put the current directory first on sys.path;
    # started from a checkout's root, the baseline would import that checkout instead of its own
    baseline_env = (
        {"PYTHONPATH": str(args.baseline_checkout.resolve()), "PYTHONSAFEPATH": "1"} if args.baseline_checkout else None
    )
    runs: list[WorkerRun] = []
    baselines: list[WorkerRun] = []
    for pair in range(args.pairs if baseline_env else 1):
        for which in ("baseline", "worker") if pair % 2 == 0 else ("worker", "baseline"):
            if which == "worker":
                runs.append(run_workers(kafka, total, args.workers, app_id=f"fleetpulse-{pair}", **extra))
                print(f"worker run {pair + 1}: {1e6 / runs[-1].cpu_rate:.1f} CPU µs per event", flush=True)
            elif baseline_env is not None:
                app_id = f"fleetpulse-baseline-{pair}"
                baselines.append(run_workers(kafka, total, args.workers, baseline_env, app_id=app_id, **extra))
                print(f"baseline run {pair + 1}: {1e6 / baselines[-1].cpu_rate:.1f} CPU µs per event", flush=True)
    run = median_run(runs)
    baseline = median_run(baselines) if baselines else None
    if baseline is not None:
        paired = sorted(b.cpu_rate / r.cpu_rate for r, b in zip(runs, baselines, strict=True))
        print(
            f"baseline worker ({args.baseline_checkout}), median of {len(baselines)}: {baseline.rate:10.0f} events/s "
            f"({baseline.cpu_rate:.0f} per CPU second) = {baseline.cpu_rate / raw_cpu_rate:.1%} of the ceiling CPU, "
            f"{1e6 / baseline.cpu_rate:.1f} CPU µs per event, peak RSS {baseline.peak_rss_mib:.0f} MiB"
        )
        print(
            f"worker CPU per event / baseline's, paired runs: median {paired[len(paired) // 2]:.3f} "
            f"(each: {', '.join(f'{ratio:.3f}' for ratio in paired)})"
        )
    rate, cpu_rate, metrics = run.rate, run.cpu_rate, run.metrics
    scores = sum(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("fleetpulse_stream_scores_total")
    )
    gc_s = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("fleetpulse_stream_gc_pause_seconds_total")
    )
    per_process = rate / args.workers
    print(
        f"pipeline ({args.workers} worker process(es), RocksDB, full), median of {len(runs)}: {rate:10.0f} events/s "
        f"({cpu_rate:.0f} per CPU second)"
    )
    print(
        f"ratio pipeline/ceiling per process: {per_process / raw_rate:.1%} wall clock, "
        f"{cpu_rate / raw_cpu_rate:.1%} CPU   scores emitted: {scores:.0f}"
    )
    by_generation = ", ".join(
        f"gen {line.partition('generation=')[2][1]}: {float(line.split()[-1]):.1f} s"
        for line in metrics.splitlines()
        if line.startswith("fleetpulse_stream_gc_pause_seconds_total")
    )
    print(
        f"ratio pipeline/batch floor per process: {per_process / batch_rate:.1%} wall clock, "
        f"{cpu_rate / batch_cpu_rate:.1%} CPU"
    )
    print(
        "CPU µs per event: "
        f"ceiling {1e6 / raw_cpu_rate:.1f}, stock floor {1e6 / floor_cpu_rate:.1f}, "
        f"batch floor {1e6 / batch_cpu_rate:.1f}, worker {1e6 / cpu_rate:.1f}"
    )
    print(f"garbage collection in the workers: {gc_s:.1f} s ({by_generation}); {total / cpu_rate:.1f} CPU s measured")
    print(f"worker peak RSS: {run.peak_rss_mib:.0f} MiB")
    cache = {
        name: sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))
        for name, prefix in (
            ("hits", 'fleetpulse_stream_state_cache_lookups_total{result="hit"}'),
            ("misses", 'fleetpulse_stream_state_cache_lookups_total{result="miss"}'),
            ("bytes", "fleetpulse_stream_state_cache_bytes "),
            ("entries", "fleetpulse_stream_state_cache_entries "),
        )
    }
    print(
        f"decoded-state cache: {cache['hits']:.0f} hits, {cache['misses']:.0f} misses "
        f"(lookups of stored states), {cache['entries']:.0f} devices in {cache['bytes'] / 2**20:.0f} MiB (estimated)"
    )
    results = {
        "devices": args.devices,
        "rounds": args.rounds,
        "records": total,
        "ceiling_eps": round(raw_rate),
        "pipeline_eps": round(rate),
        "workers": args.workers,
        "floor_eps": round(floor_rate),
        "floor_eps_per_cpu_s": round(floor_cpu_rate),
        "new_floor_eps": round(batch_rate),
        "new_floor_eps_per_cpu_s": round(batch_cpu_rate),
        "ratio_per_process": round(per_process / raw_rate, 3),
        "ratio_to_floor_per_process": round(per_process / batch_rate, 3),
        "ceiling_eps_per_cpu_s": round(raw_cpu_rate),
        "ceiling_cpu_us_per_event_runs": [round(1e6 / c[1], 1) for c in ceilings],
        "pipeline_eps_per_cpu_s": round(cpu_rate),
        "ratio_cpu": round(cpu_rate / raw_cpu_rate, 3),
        "scores": int(scores),
        "gc_s": round(gc_s, 2),
        "worker_peak_rss_mib": round(run.peak_rss_mib),
        "state_cache_hits": int(cache["hits"]),
        "state_cache_misses": int(cache["misses"]),
        "tsdb": bool(args.tsdb_url),
    }
    if baseline is not None:
        results["baseline_eps_per_cpu_s"] = round(baseline.cpu_rate)
        results["baseline_peak_rss_mib"] = round(baseline.peak_rss_mib)
        results["pairs"] = len(runs)
        results["worker_cpu_us_per_event_runs"] = [round(1e6 / r.cpu_rate, 1) for r in runs]
        results["baseline_cpu_us_per_event_runs"] = [round(1e6 / b.cpu_rate, 1) for b in baselines]
    print(json.dumps(results))
    record("stream_throughput", results, load_at_start)


if __name__ == "__main__":
    main()

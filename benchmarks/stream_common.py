"""Shared parts of the stream benchmarks: a real Kafka, a simulated fleet as stampable payloads, a worker."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from kafka import KafkaProducer

from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics, encode, report_key
from fleetpulse.streams.kafka_admin import ensure_topics
from fleetpulse.streams.process import WorkerProcess

REPO = Path(__file__).resolve().parents[1]
STAMP = datetime(2026, 1, 1, tzinfo=UTC)
STAMP_TEXT = b'"collected_at":"2026-01-01T00:00:00Z"'


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers; default: start deploy/local/stack.sh kafka (127.0.0.1:9092)",
    )


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    if bootstrap is None:
        subprocess.run(["bash", str(REPO / "deploy/local/stack.sh"), "start", "kafka"], check=True)
        bootstrap = "127.0.0.1:9092"
    return KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fleet:
    """One round of the fleet's reports as byte templates: seq and collected_at are stamped at send time."""

    topics: Topics
    inventory: list[tuple[bytes, bytes]]
    templates: list[tuple[str, bytes, bytes, bytes]]  # topic, key, before seq, after seq (with STAMP)

    @classmethod
    def simulate(cls, devices: int, topics: Topics, seed: int = 1) -> Fleet:
        sim = FleetSimulator(devices, seed=seed, start=datetime(2025, 1, 1, tzinfo=UTC), days=800)
        inventory = [(report_key(i.device_id), encode(i)) for i in sim.inventory()]
        templates = []
        for report in sim.live_reports(STAMP):
            payload = encode(report)
            before, after = payload.split(b'"seq":0,', 1)
            assert STAMP_TEXT in after
            topic = topics.mobile if report.kind.value in ("phone", "tablet") else topics.health
            templates.append((topic, report_key(report.device_id), before + b'"seq":', b"," + after))
        return cls(topics, inventory, templates)

    def payloads(self, seq: int, at: datetime) -> Iterator[tuple[str, bytes, bytes]]:
        """The whole round stamped with ``seq`` and ``at``."""
        stamp = b'"collected_at":"' + at.isoformat().replace("+00:00", "Z").encode() + b'"'
        seq_text = str(seq).encode()
        for topic, key, before, after in self.templates:
            yield topic, key, before + seq_text + after.replace(STAMP_TEXT, stamp, 1)

    def rounds(self, rounds: int) -> Iterator[tuple[str, bytes, bytes]]:
        """The benchmarks' input: the inventory, then ``rounds`` reports per device one minute apart, ending now."""
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=rounds + 1)
        for key, value in self.inventory:
            yield self.topics.inventory, key, value
        for r in range(rounds):
            yield from self.payloads(r, start + timedelta(minutes=r))


def producer(kafka: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        acks="all",
        linger_ms=10,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=5,
    )


def create_topics(kafka: KafkaSettings, partitions: int = 12) -> None:
    asyncio.run(ensure_topics(kafka, partitions))


def start_worker(
    kafka: KafkaSettings,
    data_dir: Path | None = None,
    web_port: int | None = None,
    instance: str = "bench-w1",
    **streams: object,
) -> WorkerProcess:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="fleetpulse-bench-"))
    settings: dict[str, object] = {
        "store": "rocksdb",
        "data_dir": data_dir,
        "web_port": web_port or free_port(),
        "instance_id": instance,
        "tsdb__kind": "none",
        "stats_interval_s": 5,
        **streams,
    }
    return WorkerProcess(kafka, settings, data_dir.with_suffix(".log")).start()


def cpu_seconds(workers: list[WorkerProcess]) -> float:
    """User + system CPU the worker processes have used so far."""
    total = 0.0
    for worker in workers:
        assert worker.proc is not None
        times = psutil.Process(worker.proc.pid).cpu_times()
        total += times.user + times.system
    return total


@dataclass
class Processed:
    """Wall-clock and CPU time between the first processed event and the last."""

    first: float
    done: float
    cpu_s: float


def wait_processed(workers: list[WorkerProcess], total: int, timeout: float) -> Processed:
    """Poll every worker's /health until ``total`` events are processed.

    CPU seconds are counted alongside wall time: on a shared machine the broker and
    other processes take cores, and CPU per event is the fairer efficiency measure.
    """
    deadline = time.monotonic() + timeout
    first, cpu_first = None, 0.0
    while time.monotonic() < deadline:
        done = sum(int((worker.health() or {}).get("events_total", 0)) for worker in workers)
        now = time.monotonic()
        if first is None and done > 0:
            first, cpu_first = now, cpu_seconds(workers)
        if done >= total:
            return Processed(first or now, now, cpu_seconds(workers) - cpu_first)
        time.sleep(0.05)
    raise TimeoutError(f"workers did not process {total} events in {timeout}s")

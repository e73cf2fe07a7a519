"""Shared parts of the stream benchmarks: a real Kafka, a simulated fleet as stampable payloads, a worker."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from aiokafka.admin import AIOKafkaAdminClient
from kafka import KafkaProducer

from fleetpulse.agents.signing import SignedRecord, enrolment_record
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceEnrolment, DeviceInventory, Topics, decode, decode_report, encode, report_key
from fleetpulse.contract.auth import ENROLMENT_TYPE, TYPE_HEADER, Headers, header, report_headers
from fleetpulse.streams.kafka_admin import aiokafka_auth, ensure_topics
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


def add_tsdb_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsdb-url",
        default=None,
        help="write points to this InfluxDB v2 / VictoriaMetrics URL, as a production worker does (default: none)",
    )


def tsdb_streams(url: str | None) -> dict[str, object]:
    """The workers' ``[streams]`` settings that send their points to ``url`` (none: the null sink)."""
    return {"tsdb__kind": "influxdb2", "tsdb__url": url} if url else {}


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    """Settings with a topic prefix of this run's own; its topics are deleted when the run exits."""
    if bootstrap is None:
        subprocess.run(["bash", str(REPO / "deploy/local/stack.sh"), "start", "kafka"], check=True)
        bootstrap = "127.0.0.1:9092"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    atexit.register(lambda: asyncio.run(delete_topics(kafka)))
    return kafka


async def delete_topics(kafka: KafkaSettings) -> None:
    """Delete every topic under ``kafka``'s prefix (the workers' changelogs included): a local broker that keeps
    every run's partitions (12 a topic) slows down run after run, and later runs measure that."""
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(kafka.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
"""topic, key, value, headers"""


@dataclass
class Fleet:
    """One round of the fleet's reports as byte templates: seq and collected_at are stamped at send time.

    PC reports are MACed with their device's key after stamping, as the agent does; ``enrolments``
    (one per PC, sent before its first report) give the worker those keys.
    """

    topics: Topics
    inventory: list[tuple[bytes, bytes]]
    templates: list[tuple[str, bytes, bytes, bytes]]  # topic, key, before seq, after seq (with STAMP)
    device_keys: dict[bytes, bytes]  # record key -> the PC's report key
    enrolments: list[SignedRecord]

    @classmethod
    def simulate(cls, devices: int, topics: Topics, seed: int = 1) -> Fleet:
        sim = FleetSimulator(devices, seed=seed, start=datetime(2025, 1, 1, tzinfo=UTC), days=800)
        inventory = [(report_key(i.device_id), encode(i)) for i in sim.inventory()]
        templates = []
        device_keys: dict[bytes, bytes] = {}
        enrolments = []
        for report in sim.live_reports(STAMP):
            payload = encode(report)
            before, after = payload.split(b'"seq":0,', 1)
            assert STAMP_TEXT in after
            topic = topics.mobile if report.kind.value in ("phone", "tablet") else topics.health
            key = report_key(report.device_id)
            if topic == topics.health:
                device_keys[key] = sim.device_key(report.device_id)
                enrolments.append(enrolment_record(report.device_id, device_keys[key], STAMP))
            templates.append((topic, key, before + b'"seq":', b"," + after))
        return cls(topics, inventory, templates, device_keys, enrolments)

    def headers(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """What the device's agent would send with ``value``: a MAC for PCs, nothing for MDM phones."""
        device_key = self.device_keys.get(key)
        return [] if device_key is None else report_headers(device_key, value)

    def stamped(self, n: int, seq: int, stamp: bytes) -> Record:
        """The ``n``-th template with ``seq`` and the ``"collected_at":...`` text ``stamp``, MACed."""
        topic, key, before, after = self.templates[n % len(self.templates)]
        value = before + str(seq).encode() + after.replace(STAMP_TEXT, stamp, 1)
        return topic, key, value, self.headers(key, value)

    def payloads(self, seq: int, at: datetime) -> Iterator[Record]:
        """The whole round stamped with ``seq`` and ``at``."""
        stamp = b'"collected_at":"' + at.isoformat().replace("+00:00", "Z").encode() + b'"'
        for n in range(len(self.templates)):
            yield self.stamped(n, seq, stamp)

    def preamble(self) -> Iterator[Record]:
        """The inventory, then every PC's enrolment."""
        for key, value in self.inventory:
            yield self.topics.inventory, key, value, []
        for enrolment in self.enrolments:
            yield self.topics.health, enrolment.key, enrolment.value, enrolment.headers

    def rounds(self, rounds: int) -> Iterator[Record]:
        """The benchmarks' input: the preamble, then ``rounds`` reports per device one minute apart, ending now."""
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=rounds + 1)
        yield from self.preamble()
        for r in range(rounds):
            yield from self.payloads(r, start + timedelta(minutes=r))


def publish_rounds(kafka: KafkaSettings, fleet: Fleet, rounds: int) -> int:
    """Publish ``fleet``'s inventory, enrolments and ``rounds`` reports per device; returns the record count."""
    prod = producer(kafka)
    for topic, key, value, headers in fleet.rounds(rounds):
        prod.send(topic, key=key, value=value, headers=headers)
    prod.flush()
    prod.close()
    return len(fleet.inventory) + len(fleet.enrolments) + rounds * len(fleet.templates)


def decode_input(topics: Topics, topic: str, value: bytes, headers: Headers | None) -> object:
    """Decode an input record by its kind, as the worker does first (ceiling and floor of the throughput benchmark)."""
    if topic == topics.inventory:
        return decode(value, DeviceInventory)
    if header(headers, TYPE_HEADER) == ENROLMENT_TYPE:
        return decode(value, DeviceEnrolment)
    return decode_report(value)


def producer(kafka: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        acks="all",
        linger_ms=10,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=5,
    )


def create_topics(kafka: KafkaSettings, partitions: int = 12) -> None:
    asyncio.run(ensure_topics(kafka, partitions, 1))


def start_worker(
    kafka: KafkaSettings,
    data_dir: Path | None = None,
    web_port: int | None = None,
    instance: str = "bench-w1",
    extra_env: dict[str, str] | None = None,
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
    return WorkerProcess(kafka, settings, data_dir.with_suffix(".log"), extra_env=extra_env or {}).start()


def cpu_seconds(workers: list[WorkerProcess]) -> float:
    """User + system CPU the worker processes have used so far."""
    total = 0.0
    for worker in workers:
        assert worker.proc is not None
        times = psutil.Process(worker.proc.pid).cpu_times()
        total += times.user + times.system
    return total


def peak_rss_mib(workers: list[WorkerProcess]) -> float:
    """The largest peak resident memory of the worker processes so far (Linux ``VmHWM``; 0 elsewhere)."""
    peak = 0.0
    for worker in workers:
        assert worker.proc is not None
        status = Path(f"/proc/{worker.proc.pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
    return peak


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

"""Helpers for stream-worker integration tests: worker subprocesses, topic reads, replay from scratch."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics, encode, report_key
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.settings import ModelSettings
from fleetpulse.streams.kafka_admin import consumer_lag, ensure_topics
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.harness import free_port

APP_ID = "fleetpulse"


def group_id(kafka: KafkaSettings) -> str:
    return f"{kafka.topic_prefix}{APP_ID}"


@dataclass
class Worker:
    """``fleetpulse worker`` as a subprocess, configured by environment variables like a deployment."""

    kafka: KafkaSettings
    data_dir: Path
    store: str = "rocksdb"
    tsdb_url: str | None = None
    web_port: int = field(default_factory=free_port)
    instance: str = "w1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(f".{self.instance}.log")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")}
        env.update(
            FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS=self.kafka.bootstrap_servers,
            FLEETPULSE_KAFKA__TOPIC_PREFIX=self.kafka.topic_prefix,
            FLEETPULSE_KAFKA__REQUEST_TIMEOUT_MS="10000",
            FLEETPULSE_STREAMS__STORE=self.store,
            FLEETPULSE_STREAMS__DATA_DIR=str(self.data_dir),
            FLEETPULSE_STREAMS__WEB_PORT=str(self.web_port),
            FLEETPULSE_STREAMS__INSTANCE_ID=self.instance,
            FLEETPULSE_STREAMS__SESSION_TIMEOUT_S="6",
            FLEETPULSE_STREAMS__REBALANCE_TIMEOUT_S="10",
            FLEETPULSE_STREAMS__STATS_INTERVAL_S="2",
            FLEETPULSE_STREAMS__BATCH_MAX="100",
            FLEETPULSE_MODELS__REGISTRY_DIR=str(self.data_dir / "no-models"),
        )
        if self.tsdb_url:
            env.update(FLEETPULSE_STREAMS__TSDB__KIND="influxdb2", FLEETPULSE_STREAMS__TSDB__URL=self.tsdb_url)
        else:
            env.update(FLEETPULSE_STREAMS__TSDB__KIND="none")
        return env

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from fleetpulse.cli import app; app()", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"worker exited; see {self.log_path}"
            health = self.health()
            if health and health["assigned_partitions"] > 0 and not health["rebalancing"]:
                return health
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout}s; see {self.log_path}")

    def wait_events(self, at_least: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health and health["events_total"] >= at_least:
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker did not process {at_least} events in {timeout}s")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_caught_up(kafka: KafkaSettings, timeout: float = 120.0) -> float:
    """Seconds until the worker group has committed everything on its input topics (twice in a row)."""
    started = time.monotonic()
    zero_in_a_row = 0
    while time.monotonic() - started < timeout:
        lag = asyncio.run(consumer_lag(kafka, group_id(kafka)))
        zero_in_a_row = zero_in_a_row + 1 if lag == 0 else 0
        if zero_in_a_row >= 2:
            return time.monotonic() - started
        time.sleep(1.0)
    raise TimeoutError(f"worker group still lagging after {timeout}s")


def create_topics(kafka: KafkaSettings) -> None:
    asyncio.run(ensure_topics(kafka, 12))


def small_fleet(devices: int = 40, days: int = 20, seed: int = 7) -> FleetSimulator:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days + 1)
    return FleetSimulator(devices, seed=seed, start=start, days=days, failure_scale=30)


def fleet_records(sim: FleetSimulator, topics: Topics) -> list[tuple[str, bytes, bytes]]:
    records = [(topics.inventory, report_key(i.device_id), encode(i)) for i in sim.inventory()]
    for report in sim.reports():
        topic = topics.mobile if report.kind.value in ("phone", "tablet") else topics.health
        records.append((topic, report_key(report.device_id), encode(report)))
    return records


def produce(kafka: KafkaSettings, records: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5)
    count = 0
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


def read_topic(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every record of ``topic``, partition by partition in offset order, up to the current end."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500, max_records=5000).items():
                out.extend(m for m in messages if m.offset < ends[tp])
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return sorted(out, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


def table_state(kafka: KafkaSettings) -> dict[str, DeviceRecord]:
    """The worker's table as its changelog holds it (last value per key)."""
    latest: dict[str, bytes] = {}
    for m in read_topic(kafka, f"{group_id(kafka)}-devices-changelog"):
        latest[m.key.decode()] = m.value
    return {k: DeviceRecord.from_bytes(v) for k, v in latest.items()}


@dataclass
class Replay:
    records: dict[str, DeviceRecord]
    alert_ids: set[str]
    dead_letters: int


def replay_from_scratch(kafka: KafkaSettings) -> Replay:
    """The pure processor over every input record (inventory first), one partition at a time."""
    topics = Topics(prefix=kafka.topic_prefix)
    processor = Processor(StreamSettings(), topics, load_scorers(ModelSettings()), AlertPolicy())
    table: dict[str, DeviceRecord] = {}
    alert_ids: set[str] = set()
    dead = 0
    raws = [
        RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
        for name in (topics.inventory, topics.health, topics.mobile)
        for m in read_topic(kafka, name)
    ]
    for i in range(0, len(raws), 500):
        result = processor.process_batch(
            raws[i : i + 500],
            lambda _i, d: DeviceRecord.from_bytes(table[d].to_bytes()) if d in table else None,
            datetime.now(UTC),
        )
        table.update(result.records)
        alert_ids |= {a.alert_id for a in result.alerts}
        dead += len(result.dead_letters)
    return Replay(table, alert_ids, dead)


def comparable(records: dict[str, DeviceRecord]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") for k, v in sorted(records.items())}

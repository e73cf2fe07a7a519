"""Helpers for stream-worker integration tests: worker subprocesses, topic reads, replay from scratch."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings, kafka_python_security
from fleetpulse.contract import DiskHealth, HealthReport, Topics, encode, report_key
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.settings import ModelSettings
from fleetpulse.streams.kafka_admin import ensure_topics
from fleetpulse.streams.process import WorkerProcess
from fleetpulse.streams.process import wait_caught_up as wait_for_group
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.harness import free_port

APP_ID = "fleetpulse"
RULES_ONLY = ModelSettings(registry_dir=Path("/nonexistent/fleetpulse-rules-only"))
"""Worker and replay must score with the same models: never a registry another run trained."""


def group_id(kafka: KafkaSettings) -> str:
    return f"{kafka.topic_prefix}{APP_ID}"


def Worker(
    kafka: KafkaSettings,
    data_dir: Path,
    store: str = "rocksdb",
    tsdb_url: str | None = None,
    web_port: int | None = None,
    instance: str = "w1",
    **overrides: object,
) -> WorkerProcess:
    """A worker child process with short test timeouts and small batches (so kills land mid-stream).

    ``overrides`` are further stream settings (e.g. ``commit_interval_s``)."""
    streams: dict[str, object] = {
        "store": store,
        "data_dir": data_dir,
        "web_port": web_port or free_port(),
        "instance_id": instance,
        "session_timeout_s": 6,
        "rebalance_timeout_s": 10,
        "stats_interval_s": 2,
        "drift_interval_s": 2,
        "batch_max": 100,
        "baseline_refit_s": 0,  # anomaly scores from priors only: a replay from scratch must match exactly
        "tsdb__kind": "influxdb2" if tsdb_url else "none",
        **overrides,
    }
    if tsdb_url:
        streams["tsdb__url"] = tsdb_url
    return WorkerProcess(
        kafka,
        streams,
        data_dir.with_suffix(f".{instance}.log"),
        extra_env={"FLEETPULSE_MODELS__REGISTRY_DIR": str(RULES_ONLY.registry_dir)},
    )


def wait_caught_up(kafka: KafkaSettings, timeout: float = 120.0) -> float:
    return wait_for_group(kafka, group_id(kafka), timeout)


def create_topics(kafka: KafkaSettings) -> None:
    asyncio.run(ensure_topics(kafka, 12, 1))


def small_fleet(devices: int = 40, days: int = 20, seed: int = 7) -> FleetSimulator:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days + 1)
    return FleetSimulator(devices, seed=seed, start=start, days=days, failure_scale=30)


Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""topic, key, value, headers"""


def fleet_records(sim: FleetSimulator, topics: Topics) -> list[Record]:
    """Inventory, then every report as its sender publishes it: PCs enrol first and MAC each report."""
    records: list[Record] = [(topics.inventory, report_key(i.device_id), encode(i), []) for i in sim.inventory()]
    enrolled: set[str] = set()
    for report in sim.reports():
        if report.kind.value in ("phone", "tablet"):
            records.append((topics.mobile, report_key(report.device_id), encode(report), []))
            continue
        key = sim.device_key(report.device_id)
        if report.device_id not in enrolled:
            enrolment = enrolment_record(report.device_id, key, report.collected_at)
            records.append((topics.health, enrolment.key, enrolment.value, enrolment.headers))
            enrolled.add(report.device_id)
        signed = signed_report(report, key)
        records.append((topics.health, signed.key, signed.value, signed.headers))
    return records


def produce(kafka: KafkaSettings, records: Iterable[Record | tuple[str, bytes | None, bytes | None]]) -> int:
    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5, **kafka_python_security(kafka)
    )
    count = 0
    for topic, key, value, *headers in records:
        producer.send(topic, key=key, value=value, headers=headers[0] if headers else None)
        count += 1
    producer.flush()
    producer.close()
    return count


def read_topic(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every record of ``topic``, partition by partition in offset order, up to the current end."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, **kafka_python_security(kafka)
    )
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
    """The worker's table as its changelog holds it (last value per key; a tombstone erases the key)."""
    latest: dict[str, bytes] = {}
    for m in read_topic(kafka, f"{group_id(kafka)}-devices-changelog"):
        if m.value is None:
            latest.pop(m.key.decode(), None)
        else:
            latest[m.key.decode()] = m.value
    return {k: DeviceRecord.from_bytes(v) for k, v in latest.items()}


ScoreKey = tuple[str, str, str, str, str, int]
"""device, component, component id, model, role, report seq: what identifies one emitted score"""


def score_key(score: dict[str, Any]) -> ScoreKey:
    return (
        score["device_id"],
        score["component"],
        score["component_id"],
        score["model_name"],
        score["role"],
        score["report_seq"],
    )


def disk_report(device_id: str, seq: int, realloc: int, at: datetime) -> HealthReport:
    """A desktop's report of one old hard disk with ``realloc`` reallocated sectors."""
    return HealthReport(
        device_id=device_id,
        seq=seq,
        collected_at=at,
        kind="desktop",
        platform="linux",
        disks=[
            DiskHealth(name="sda", serial_hash="s1", kind="hdd", reallocated_sectors=realloc, power_on_hours=20_000)
        ],
    )


@dataclass
class Replay:
    records: dict[str, DeviceRecord]
    alert_ids: set[str]
    dead_letters: int
    scores: Counter[ScoreKey]


def replay_from_scratch(kafka: KafkaSettings) -> Replay:
    """The pure processor over every input record (inventory first), one partition at a time."""
    topics = Topics(prefix=kafka.topic_prefix)
    processor = Processor(StreamSettings(), topics, load_scorers(RULES_ONLY), AlertPolicy())
    table: dict[str, DeviceRecord] = {}
    alert_ids: set[str] = set()
    scores: Counter[ScoreKey] = Counter()
    dead = 0
    raws = [
        RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.headers)
        for name in (topics.inventory, topics.mobile_inventory, topics.control, topics.health, topics.mobile)
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
        scores.update(score_key(score.model_dump(mode="json")) for score in result.scores)
        dead += len(result.dead_letters)
    return Replay(table, alert_ids, dead, scores)


def comparable(records: dict[str, DeviceRecord]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") for k, v in sorted(records.items())}


def state_differences(actual: dict[str, DeviceRecord], expected: dict[str, DeviceRecord]) -> list[str]:
    """Human-readable differences between two tables (empty when equal): which device, which field."""
    a, e = comparable(actual), comparable(expected)
    out = [f"missing {k}" for k in e.keys() - a.keys()] + [f"unexpected {k}" for k in a.keys() - e.keys()]
    for key in sorted(a.keys() & e.keys()):
        if a[key] != e[key]:
            fields = _diff(a[key], e[key], key)
            out.extend(fields[:5])
    return out


def _diff(a: Any, e: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(e, dict):
        return [d for k in sorted(a.keys() | e.keys()) for d in _diff(a.get(k), e.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(e, list):
        if len(a) != len(e):
            return [f"{path}: {len(a)} values live, {len(e)} in the replay; live={a!r} replay={e!r}"]
        return [f"{path}[{i}]: live={x!r} replay={y!r}" for i, (x, y) in enumerate(zip(a, e, strict=True)) if x != y]
    return [] if a == e else [f"{path}: live={a!r} replay={e!r}"]

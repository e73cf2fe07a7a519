"""A record on another partition than its key's is refused: the attack of a PC that picks the partition.

Kafka's ACLs let a producer write any partition of a topic it may write. The worker keeps a device's
state in the table partition the record arrived on, so on any other partition the device has no
record and a stranger's enrolment would count as its first. The attacker holds the agents' shared
Kafka credential and knows the wire format, but not the victim's device key.

The runtime wrapper is driven for real (``Pipeline.handle``: lookups, the processor, the write-back);
only Kafka is replaced: a table of one dict per partition, a consumer that owns every partition,
and a ``publish`` that keeps what it would produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from fleetpulse.agents.signing import SignedRecord, enrolment_record, signed_report
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.contract import Alert, DeadLetter, DeviceInventory, DiskHealth, HealthReport, Topics, decode, encode
from fleetpulse.models.registry import rule_scorers
from fleetpulse.streams import app as app_module
from fleetpulse.streams.app import Pipeline
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.partitioning import default_partition
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from fleetpulse.streams.sinks import NullSink

TOPICS = Topics(prefix="")
PARTITIONS = 12
NOW = datetime.now(UTC).replace(microsecond=0)
VICTIM = "pc-victim"
VICTIM_KEY = bytes(range(32))
ATTACKER_KEY = bytes(range(32, 64))
HOME = default_partition(VICTIM.encode(), tuple(range(PARTITIONS)))
ELSEWHERE = (HOME + 1) % PARTITIONS


class Table:
    def __init__(self) -> None:
        self.partitions: list[dict[bytes, bytes]] = [{} for _ in range(PARTITIONS)]
        self.decoded = None

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions[partition].get(key)

    async def write_batch(self, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.partitions[partition].update(items)


class Consumer:
    def assignment(self) -> set[TP]:
        inputs = (TOPICS.health, TOPICS.inventory, TOPICS.mobile_inventory)
        return {TP(t, p) for t in inputs for p in range(PARTITIONS)}

    def topic_partitions(self, topic: str) -> int:
        return PARTITIONS


class Worker:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.produced: dict[str, list[bytes]] = {}
        self.table = Table()
        self.offset = 0

        async def publish(app: Any, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
            self.produced.setdefault(topic, []).extend(value for _, value in records)
            return []

        monkeypatch.setattr(app_module, "publish", publish)
        processor = Processor(StreamSettings(partitions=PARTITIONS), TOPICS, rule_scorers(), AlertPolicy())
        app: Any = SimpleNamespace(consumer=Consumer())
        self.pipeline = Pipeline(app, self.table, TOPICS, processor, NullSink(), PipelineMetrics(), "w1")  # type: ignore[arg-type]

    def send(self, *records: tuple[str, SignedRecord, int]) -> None:
        """One batch of (topic, record, partition it is produced to)."""
        events = []
        for topic, record, partition in records:
            message = SimpleNamespace(
                topic=topic,
                partition=partition,
                offset=self.offset,
                key=record.key,
                value=record.value,
                headers=record.headers,
                tp=TP(topic, partition),
            )
            self.offset += 1
            events.append(SimpleNamespace(message=message))
        asyncio.run(self.pipeline.handle(events))

    def record(self, partition: int) -> DeviceRecord | None:
        raw = self.table.read(partition, VICTIM.encode())
        return DeviceRecord.from_bytes(raw) if raw is not None else None

    def dead_letters(self) -> list[DeadLetter]:
        return [decode(value, DeadLetter) for value in self.produced.get(TOPICS.dead_letter, [])]

    def alerts(self) -> list[Alert]:
        return [decode(value, Alert) for value in self.produced.get(TOPICS.alerts, [])]


def report(seq: int, at: datetime, realloc: int = 0) -> HealthReport:
    disk = DiskHealth(name="sda", serial_hash="s1", kind="hdd", reallocated_sectors=realloc, current_pending_sectors=0)
    return HealthReport(device_id=VICTIM, seq=seq, collected_at=at, kind="laptop", platform="linux", disks=[disk])


def signed(seq: int, at: datetime, key: bytes, realloc: int = 0) -> tuple[str, SignedRecord, int]:
    return TOPICS.health, signed_report(report(seq, at, realloc), key), HOME


def elsewhere(record: tuple[str, SignedRecord, int]) -> tuple[str, SignedRecord, int]:
    topic, signed_record, _ = record
    return topic, signed_record, ELSEWHERE


def enrolment(key: bytes) -> tuple[str, SignedRecord, int]:
    return TOPICS.health, enrolment_record(VICTIM, key, NOW - timedelta(days=1)), HOME


def enrolled_victim(monkeypatch: pytest.MonkeyPatch) -> Worker:
    worker = Worker(monkeypatch)
    worker.send(enrolment(VICTIM_KEY))
    worker.send(*(signed(seq, NOW - timedelta(hours=10 - seq), VICTIM_KEY) for seq in range(3)))
    return worker


def test_an_enrolment_and_reports_on_a_chosen_partition_are_refused_and_change_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = enrolled_victim(monkeypatch)
    failing = [signed(100 + i, NOW - timedelta(hours=5, minutes=-i), ATTACKER_KEY, realloc=5000) for i in range(3)]
    healthy = [signed(200 + i, NOW - timedelta(hours=2, minutes=-i), ATTACKER_KEY) for i in range(3)]
    worker.send(elsewhere(enrolment(ATTACKER_KEY)))
    worker.send(*map(elsewhere, failing))
    worker.send(*map(elsewhere, healthy))

    assert [d.error_kind for d in worker.dead_letters()] == ["wrong_partition"] * 7
    assert all(d.partition == ELSEWHERE for d in worker.dead_letters())
    assert f"belongs on partition {HOME} of {PARTITIONS}, not {ELSEWHERE}" in worker.dead_letters()[0].reason
    assert ATTACKER_KEY.hex() not in str(worker.dead_letters()), "a dead letter must not carry a device key"
    assert worker.record(ELSEWHERE) is None
    assert worker.alerts() == []
    victim = worker.record(HOME)
    assert victim is not None
    assert (victim.device_key, victim.state.last_seq) == (VICTIM_KEY.hex(), 2)


def test_a_record_on_a_chosen_partition_cannot_carry_its_state_home_within_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker's report first, then IT's register update and the genuine report on the home partition."""
    worker = enrolled_victim(monkeypatch)
    inventory = DeviceInventory(
        device_id=VICTIM, kind="laptop", model="T14", site="HQ", updated_at=NOW - timedelta(hours=1)
    )
    register = SimpleNamespace(key=VICTIM.encode(), value=encode(inventory), headers=[])
    worker.send(
        elsewhere(enrolment(ATTACKER_KEY)),
        elsewhere(signed(500, NOW - timedelta(hours=3), ATTACKER_KEY)),
        (TOPICS.inventory, register, HOME),  # type: ignore[arg-type]
        signed(3, NOW - timedelta(hours=2), VICTIM_KEY),
    )

    assert [d.error_kind for d in worker.dead_letters()] == ["wrong_partition", "wrong_partition"]
    victim = worker.record(HOME)
    assert victim is not None
    assert (victim.device_key, victim.state.last_seq, victim.state.site) == (VICTIM_KEY.hex(), 3, "HQ")


def test_the_pure_processor_refuses_misplaced_records_on_every_source_topic() -> None:
    processor = Processor(StreamSettings(), TOPICS, rule_scorers(), AlertPolicy())
    inventory = DeviceInventory(device_id=VICTIM, kind="laptop", updated_at=NOW - timedelta(hours=1))
    enrol = enrolment_record(VICTIM, VICTIM_KEY, NOW - timedelta(days=1))
    batch = [
        RawRecord(TOPICS.inventory, ELSEWHERE, 0, VICTIM.encode(), encode(inventory)),
        RawRecord(TOPICS.health, ELSEWHERE, 1, enrol.key, enrol.value, enrol.headers),
        RawRecord(TOPICS.health, HOME, 2, enrol.key, enrol.value, enrol.headers),
    ]
    counts = {TOPICS.inventory: PARTITIONS, TOPICS.health: PARTITIONS}

    result = processor.process_batch(batch, lambda index, device_id: None, NOW, counts)

    assert [(d.source_topic, d.error_kind) for d in result.dead_letters] == [
        (TOPICS.inventory, "wrong_partition"),
        (TOPICS.health, "wrong_partition"),
    ]
    assert result.records[VICTIM].device_key == VICTIM_KEY.hex()
    assert result.records[VICTIM].inventory_at is None


def test_the_mdm_inventory_topic_is_partition_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge's principal picks partitions like any producer: its phone's facts count on their home only."""
    phone = "mdm-0a1b2c3d"
    home = default_partition(phone.encode(), tuple(range(PARTITIONS)))
    inventory = DeviceInventory(device_id=phone, kind="phone", site="HQ", updated_at=NOW - timedelta(hours=1))
    record = SimpleNamespace(key=phone.encode(), value=encode(inventory), headers=[])
    worker = Worker(monkeypatch)
    worker.send(
        (TOPICS.mobile_inventory, record, (home + 1) % PARTITIONS),  # type: ignore[arg-type]
        (TOPICS.mobile_inventory, record, home),  # type: ignore[arg-type]
    )

    assert [(d.source_topic, d.error_kind) for d in worker.dead_letters()] == [
        (TOPICS.mobile_inventory, "wrong_partition")
    ]
    assert worker.table.read((home + 1) % PARTITIONS, phone.encode()) is None
    joined = worker.table.read(home, phone.encode())
    assert joined is not None
    assert DeviceRecord.from_bytes(joined).state.site == "HQ"

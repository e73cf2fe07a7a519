"""Records that Python's own JSON reader refuses with something other than a JSON error.

``json.loads`` raises a plain ValueError for an integer literal of more than 4300 digits (Python's
int-string limit) and RecursionError for deep nesting. ``decode`` promises ContractError only: a
leaked ValueError made the ticket consumer's ``poll_once`` raise before its commit, so it failed on
the same record forever, and the stream worker logged it as a processing error with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetpulse.alerts.consumer import TicketConsumer
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import (
    Alert,
    ContractError,
    DeadLetter,
    DeviceInventory,
    HealthReport,
    RiskScore,
    Topics,
    decode,
    decode_report,
    encode,
)
from fleetpulse.streams.settings import StreamSettings
from tests.alerts_support import make_inventory
from tests.unit.test_stream_processing import TOPICS, Table, processor, raw

HUGE_NUMBER = b"1" + b"0" * 5000
INVENTORY = encode(make_inventory())


def with_huge_number(value: bytes) -> bytes:
    return value[:-1] + b', "x": ' + HUGE_NUMBER + b"}"


def deeply_nested(depth: int) -> bytes:
    return b'{"device_id": "pc-0001", "x": ' + b"[" * depth + b"]" * depth + b"}"


POISON = {
    "5000-digit integer": with_huge_number(INVENTORY),
    "5000-digit schema_version": b'{"schema_version": ' + HUGE_NUMBER + b"}",
    "5000-digit value alone": HUGE_NUMBER,
    "nested 100,000 deep": deeply_nested(100_000),
}


@pytest.mark.parametrize("payload", POISON.values(), ids=POISON.keys())
@pytest.mark.parametrize("model", [DeviceInventory, HealthReport, Alert, RiskScore, DeadLetter])
def test_unreadable_json_is_a_contract_error(payload: bytes, model: type[Any]) -> None:
    with pytest.raises(ContractError) as err:
        decode(payload, model)
    assert err.value.kind == "malformed_json"
    assert 0 < len(err.value.reason) <= 300
    with pytest.raises(ContractError):
        decode(payload.decode(), model)  # the str path too


def test_a_deep_schema_version_is_named_by_its_type_only() -> None:
    """Its repr would be as deep as the value (and as long): the reason stays short."""
    with pytest.raises(ContractError) as err:
        decode_report(b'{"schema_version": ' + b"[" * 900 + b"]" * 900 + b"}")
    assert err.value.kind == "unsupported_version"
    assert err.value.reason == "schema_version list; this consumer reads 1"


def test_a_lone_surrogate_in_a_str_payload_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        decode('{"device_id": "\ud800"}', DeviceInventory)


def test_the_stream_worker_dead_letters_a_huge_number_as_malformed_json() -> None:
    result = Table().run(processor(), [raw(TOPICS.health, with_huge_number(INVENTORY), b"pc-0001")])
    assert [d.error_kind for d in result.dead_letters] == ["malformed_json"]
    assert result.counts["dead_letter.processing_error"] == 0


class FakeKafkaConsumer:
    """One poll of the given records, then nothing; records commits."""

    def __init__(self, records: list[SimpleNamespace]) -> None:
        self.records = records
        self.commits = 0

    def subscribe(self, topics: list[str]) -> None:
        pass

    def poll(self, timeout_ms: int) -> dict[str, list[SimpleNamespace]]:
        records, self.records = self.records, []
        return {"tp": records} if records else {}

    def commit(self) -> None:
        self.commits += 1

    def close(self) -> None:
        pass


class FakeKafkaProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> None:
        self.sent.append((topic, value))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class NoLabels:
    def publish(self, outcome: object) -> str:
        raise AssertionError("no ticket closes here")


def consumer_over(
    values: Sequence[tuple[str, bytes]], store: TicketStore, monkeypatch: pytest.MonkeyPatch, key: bytes = b"pc"
) -> tuple[TicketConsumer, FakeKafkaConsumer, FakeKafkaProducer]:
    """A ticket consumer over ``store`` whose one poll returns ``values`` ((topic, value), offsets in order)."""
    records = [
        SimpleNamespace(topic=topic, partition=0, offset=offset, key=key, value=value)
        for offset, (topic, value) in enumerate(values)
    ]
    kafka_consumer, producer = FakeKafkaConsumer(records), FakeKafkaProducer()
    monkeypatch.setattr("kafka.KafkaConsumer", lambda **_: kafka_consumer)
    monkeypatch.setattr("kafka.KafkaProducer", lambda **_: producer)
    monkeypatch.setattr("fleetpulse.streams.kafka_admin.create_configured_topics", lambda *_: None)
    consumer = TicketConsumer(AlertSettings(), KafkaSettings(), StreamSettings(), store, {}, NoLabels())
    return consumer, kafka_consumer, producer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TicketStore]:
    opened = TicketStore.open(f"sqlite:///{tmp_path}/tickets.db")
    yield opened
    opened.close()


def test_the_ticket_consumer_dead_letters_unreadable_records_and_commits(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = Topics()
    poison = [
        (topics.inventory, with_huge_number(INVENTORY)),
        (topics.alerts, deeply_nested(100_000)),
        (topics.scores, b'{"risk": ' + HUGE_NUMBER + b"}"),
    ]
    valid = (topics.inventory, encode(make_inventory("pc-0002", updated_at=datetime.now(UTC) - timedelta(hours=1))))
    consumer, kafka_consumer, producer = consumer_over([*poison, valid], store, monkeypatch, key=b"pc-0001")
    try:
        assert consumer.poll_once() == len(poison) + 1  # raised ValueError before the commit
    finally:
        consumer.close()
    assert kafka_consumer.commits == 1
    letters = [decode(value, DeadLetter) for topic, value in producer.sent if topic == topics.dead_letter]
    assert [(d.offset, d.error_kind) for d in letters] == [(i, "malformed_json") for i in range(len(poison))]
    assert consumer.stats.results.get("inventory") == 1  # the record after them still applied
    assert store.get_device("pc-0002") is not None


def test_attack_a_flood_of_bad_records_is_dead_lettered_one_by_one_and_logged_once(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A leaked MDM credential can write thousands of bad records a second: each one reaches the dead-letter
    topic with its reason, and the log gets one line with the count, not a line per record."""
    topics = Topics()
    flood = [(topics.mobile_inventory, b"{not json %d" % n) for n in range(2_000)]
    consumer, _, producer = consumer_over(flood, store, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="fleetpulse.alerts.consumer"):
            consumer.poll_once()
    finally:
        consumer.close()
    letters = [decode(value, DeadLetter) for topic, value in producer.sent if topic == topics.dead_letter]
    assert [d.offset for d in letters] == list(range(2_000))
    assert {d.error_kind for d in letters} == {"malformed_json"}
    logged = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].fields["kind"] == "malformed_json"  # type: ignore[attr-defined]

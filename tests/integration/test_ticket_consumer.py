"""The ticket consumer against the real Kafka broker: one ticket per component even under replays."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaConsumer, KafkaProducer

from fleetpulse.alerts.consumer import consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.codec import encode
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import AlertState
from tests.alerts_support import make_alert, make_inventory, store_url

__all__ = ["store_url"]  # fixture

pytestmark = pytest.mark.integration


def produce(kafka: KafkaSettings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_all(kafka: KafkaSettings, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    values = [json.loads(m.value) for m in consumer]
    consumer.close()
    return values


def test_replayed_alerts_open_one_ticket_per_component(kafka_settings: KafkaSettings, store_url: str) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    settings = AlertSettings(store_url=store_url)
    inventory = [make_inventory(f"pc-{n:04d}") for n in range(5)]
    raises = [make_alert(f"pc-{n:04d}", i=1) for n in range(5)]
    second_raise = make_alert("pc-0000", i=2, alert_id="pc-0000:disk:sn1:2:raised", risk=0.95)
    cleared = make_alert("pc-0001", i=3, alert_id="pc-0001:disk:sn1:1:cleared", state=AlertState.CLEARED, risk=0.1)
    records = [(topics.inventory, i.device_id.encode(), encode(i)) for i in inventory]
    records += [(topics.alerts, a.device_id.encode(), encode(a)) for a in [*raises, second_raise, cleared]]
    records += [
        (topics.alerts, b"pc-9", b"{not json"),
        (topics.alerts, b"pc-9", json.dumps({"schema_version": 7}).encode()),
    ]
    produce(kafka_settings, records)

    stats = consume_until_idle(settings, kafka_settings, idle_seconds=2, max_seconds=60)
    assert stats.results["opened"] == 5
    assert stats.dead_letters == 2

    # replay everything (a new consumer group re-reads from the start) plus the raises once more
    produce(kafka_settings, [(topics.alerts, a.device_id.encode(), encode(a)) for a in raises])
    replay = settings.model_copy(update={"consumer": settings.consumer.model_copy(update={"group_id": "replay"})})
    stats = consume_until_idle(replay, kafka_settings, idle_seconds=2, max_seconds=60)
    assert stats.results.get("opened", 0) == 0
    assert stats.results["duplicate"] == 5 + 2 + 5

    store = TicketStore.open(settings.store_url)
    open_tickets = store.open_tickets()
    assert sorted(t.device_id for t in open_tickets) == [f"pc-{n:04d}" for n in range(5)]
    first = store.list_tickets()[0]
    assert first.device_id == "pc-0000"  # re-raised at 95%: most urgent
    assert first.risk == 0.95
    assert first.site == "Town Hall"
    cleared_ticket = next(t for t in store.list_tickets() if t.device_id == "pc-0001")
    assert cleared_ticket.alert_cleared_at is not None
    assert [e.kind for e in store.ticket_events(cleared_ticket.id)] == ["opened", "alert_cleared"]
    store.close()

    letters = read_all(kafka_settings, topics.dead_letter)
    # the replay re-read the two bad records: each pass dead-letters them again (with the reason), none crash
    kinds = sorted(str(letter["error_kind"]) for letter in letters)
    assert kinds == ["malformed_json", "malformed_json", "unsupported_version", "unsupported_version"]

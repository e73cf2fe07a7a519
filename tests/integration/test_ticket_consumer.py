"""The ticket consumer against the real Kafka broker: one ticket per component even under replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer
from pydantic import TypeAdapter

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.connectors import ConnectorConfig
from fleetpulse.alerts.consumer import consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.codec import encode
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import AlertState, TicketOutcome
from fleetpulse.streams.settings import StreamSettings
from tests.alerts_support import make_alert, make_inventory, store_url
from tests.harness import free_port
from tests.integration.test_connectors import RecordingHttp
from tests.unit.test_tickets_api import PASSWORD, api_settings

__all__ = ["store_url"]  # fixture

pytestmark = pytest.mark.integration


def produce(kafka: KafkaSettings, records: list[tuple[str, bytes, bytes | None]]) -> None:
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
        (topics.alerts, b"pc-9", None),  # a tombstone where events belong
        (topics.inventory, b"pc-0003", None),  # a retired device: fine, its history stays
    ]
    produce(kafka_settings, records)

    stats = consume_until_idle(settings, kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=60)
    assert stats.results["opened"] == 5
    assert stats.dead_letters == 3

    # replay everything (a new consumer group re-reads from the start) plus the raises once more
    produce(kafka_settings, [(topics.alerts, a.device_id.encode(), encode(a)) for a in raises])
    replay = settings.model_copy(update={"consumer": settings.consumer.model_copy(update={"group_id": "replay"})})
    stats = consume_until_idle(replay, kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=60)
    assert stats.results.get("opened", 0) == 0
    assert stats.results["duplicate"] == 5 + 2 + 5
    assert stats.dead_letters == 3

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
    assert kinds == sorted(["malformed_json", "unsupported_version", "schema_violation"] * 2)


def test_end_to_end_alert_to_itsm_and_outcome_to_labels(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Kafka alert -> ticket -> webhook; fleet manager dismisses it in the API -> outcome on the labels topic."""
    hook = RecordingHttp(free_port(), status=204)
    hook.start()
    topics = Topics(prefix=kafka_settings.topic_prefix)
    settings = api_settings(f"sqlite:///{tmp_path}/tickets.db").model_copy(
        update={
            "connectors": [
                TypeAdapter(ConnectorConfig).validate_python({"kind": "webhook", "name": "hook", "url": hook.url})
            ]
        }
    )
    try:
        produce(kafka_settings, [(topics.alerts, b"pc-7", encode(make_alert("pc-7")))])
        stats = consume_until_idle(settings, kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=60)
        assert stats.results["opened"] == 1
        assert stats.delivered == 1
        assert json.loads(hook.requests[0].body)["ticket"]["device_id"] == "pc-7"

        store = TicketStore.open(settings.store_url)
        with TestClient(create_app(settings, store)) as client:
            response = client.post(
                "/api/v1/tickets/1/transition", json={"to": "dismissed", "note": "battery fine"}, auth=("fm", PASSWORD)
            )
            assert response.status_code == 200
        store.close()
        stats = consume_until_idle(settings, kafka_settings, StreamSettings(), idle_seconds=1, max_seconds=60)
        assert stats.delivered == 2  # the outcome label, and the dismissal noted at the webhook
        update = json.loads(hook.requests[1].body)
        assert (update["subject"], update["ticket"]["state"]) == ("update", "dismissed")
    finally:
        hook.stop()
    outcomes = [TicketOutcome.model_validate(v) for v in read_all(kafka_settings, topics.labels)]
    assert [(o.device_id, o.outcome, o.recorded_by) for o in outcomes] == [("pc-7", "false_alarm", "fm")]


def test_feature_log_records_are_stored_once_and_hostile_ones_dead_lettered(
    kafka_settings: KafkaSettings, store_url: str
) -> None:
    from fleetpulse.alerts.fleetlog import FleetLog
    from fleetpulse.contract import Component
    from tests.unit.test_feature_log import record

    topics = Topics(prefix=kafka_settings.topic_prefix)
    good = record()
    valid = encode(good)
    hostile = [
        valid.replace(b'"media_errors":3.0', b'"media_errors":NaN'),  # not a finite number
        valid.replace(b'"media_errors":3.0', b'"media_errors; DROP TABLE feature_log":3.0'),  # not a feature name
        json.dumps({**json.loads(valid), "features": {f"f{i}": 1.0 for i in range(200)}}).encode(),  # unbounded
        json.dumps(
            {**json.loads(valid), "owner_email": "someone@example.org"}
        ).encode(),  # personal data: unknown field
    ]
    key = good.log_key().encode()
    produce(
        kafka_settings,
        [(topics.features, key, valid), (topics.features, key, valid)] + [(topics.features, key, h) for h in hostile],
    )
    stats = consume_until_idle(
        AlertSettings(store_url=store_url), kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=60
    )
    assert stats.results["feature_log"] == 1
    assert stats.results["feature_log_repeated"] == 1
    assert stats.dead_letters == len(hostile)
    store = TicketStore.open(store_url)
    try:
        (row,) = FleetLog(store).feature_rows(Component.DISK, registered_only=False)
    finally:
        store.close()
    assert row.features == {"media_errors": 3.0, "media_errors_delta_7d": 2.0}
    letters = [
        letter for letter in read_all(kafka_settings, topics.dead_letter) if letter["source_topic"] == topics.features
    ]
    assert len(letters) == len(hostile)

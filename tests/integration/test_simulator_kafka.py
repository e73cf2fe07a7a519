"""The simulated fleet lands on the real Kafka topics, keyed by device, decodable by the contract."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime

import pytest
from kafka import KafkaConsumer

from fleetpulse.agents.kafka_publish import publish_fleet
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, Topics, decode, decode_report
from fleetpulse.contract.auth import ENROLMENT_TYPE, MAC_HEADER, TYPE_HEADER, mac_matches
from fleetpulse.streams.settings import StreamSettings

pytestmark = pytest.mark.integration


def _read_all(kafka: KafkaSettings, topic: str, expected: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
        request_timeout_ms=10_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=2_000,
    )
    out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    try:
        for _ in range(10):
            out += [(m.key, m.value, dict(m.headers or [])) for m in consumer]
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def test_publish_fleet_round_trip(kafka_settings: KafkaSettings) -> None:
    sim = FleetSimulator(60, 99, datetime(2025, 3, 1, tzinfo=UTC), 4)
    expected = Counter(
        "mobile" if sim.is_mobile(sim.device_ids().index(r.device_id)) else "health" for r in sim.reports()
    )
    stats = publish_fleet(sim, kafka_settings, StreamSettings(), progress=False)
    assert stats.errors == []
    assert (stats.inventory, stats.health, stats.mobile) == (60, expected["health"], expected["mobile"])

    topics = Topics(prefix=kafka_settings.topic_prefix)
    inventory = _read_all(kafka_settings, topics.inventory, 60)
    assert sorted(decode(v, DeviceInventory).device_id.encode() for _, v, _ in inventory) == sorted(
        k for k, _, _ in inventory
    )
    assert len(inventory) == 60

    on_health = _read_all(kafka_settings, topics.health, stats.health + stats.enrolments)
    enrolments = [r for r in on_health if r[2].get(TYPE_HEADER) == ENROLMENT_TYPE]
    health = [r for r in on_health if TYPE_HEADER not in r[2]]
    mobile = _read_all(kafka_settings, topics.mobile, stats.mobile)
    assert len(health) == stats.health
    assert len(mobile) == stats.mobile
    assert stats.enrolments == len(enrolments) == len({k for k, _, _ in health})  # each PC enrols once
    for key, value, _ in health + mobile:
        assert decode_report(value).device_id.encode() == key
    for key, value, headers in health:  # MACed with the simulated device's own key, as its agent would
        assert mac_matches(sim.device_key(key.decode()), value, headers.get(MAC_HEADER))
    # Per-device order survives partitioning: seq strictly increasing within each key.
    last: dict[bytes, int] = {}
    for key, value, _ in health:
        seq = decode_report(value).seq
        assert seq > last.get(key, -1)
        last[key] = seq

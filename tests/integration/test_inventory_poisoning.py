"""Inventory poisoning against the real Kafka: a record dated 2099 on the compacted inventory topic.

Before the check, the stream worker and the ticket consumer both kept the 2099 record and
refused every later correct update of the device as older. Now both dead-letter it with the
reason and apply the correct update that follows.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.alerts.consumer import consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, Topics, encode
from fleetpulse.streams.settings import StreamSettings
from tests.integration.stream_support import Worker, create_topics, produce, read_topic, table_state, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_future_dated_inventory_is_dead_lettered_and_correct_updates_apply(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    poisoned = DeviceInventory(
        device_id="pc-1", kind="laptop", site="Attacker", updated_at=datetime(2099, 1, 1, tzinfo=UTC)
    )
    correct = DeviceInventory(device_id="pc-1", kind="laptop", site="Town Hall", updated_at=now - timedelta(hours=1))
    other = DeviceInventory(device_id="pc-2", kind="desktop", site="Library", updated_at=now - timedelta(hours=1))
    records = [(b"pc-1", poisoned), (b"pc-1", correct), (b"pc-2", other)]
    produce(kafka_settings, [(topics.inventory, key, encode(value)) for key, value in records])

    worker = Worker(kafka_settings, tmp_path / "w1", store="memory", instance="inv")
    worker.start()
    try:
        worker.wait_ready()
        wait_caught_up(kafka_settings)
    finally:
        worker.stop()
    table = table_state(kafka_settings)
    assert table["pc-1"].state.site == "Town Hall"
    assert table["pc-1"].inventory_at == correct.updated_at
    assert table["pc-2"].state.site == "Library"

    store_url = f"sqlite:///{tmp_path}/tickets.db"
    stats = consume_until_idle(
        AlertSettings(store_url=store_url), kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=120
    )
    assert stats.results.get("inventory") == 2
    store = TicketStore.open(store_url)
    try:
        device = store.get_device("pc-1")
    finally:
        store.close()
    assert device is not None
    assert (device.site, device.updated_at) == ("Town Hall", correct.updated_at)

    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert len(dead) == 2  # one from the worker, one from the ticket consumer
    for letter in dead:
        assert letter["error_kind"] == "clock_skew"
        assert letter["source_topic"] == topics.inventory
        assert letter["key"] == "pc-1"
        assert "2099-01-01" in letter["reason"]

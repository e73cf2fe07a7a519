"""Routing and failure accounting of the bulk publisher (a fake producer; the real broker is in integration)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetpulse.agents.kafka_publish import PublishStats, publish_records
from fleetpulse.agents.mdm import SeqStore, ingest_text
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceKind, ReportSource, Topics, decode_report
from fleetpulse.contract.auth import mdm_inventory_refusal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class _Future:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_errback(self, callback: Callable[[BaseException], None]) -> _Future:
        if self.error is not None:
            callback(self.error)
        return self


class _FakeProducer:
    def __init__(self, fail_topic: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_topic = fail_topic

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        return _Future(TimeoutError("broker gone") if topic == self.fail_topic else None)


def test_reports_are_routed_by_their_sender_after_the_inventory() -> None:
    sim = FleetSimulator(80, 5, datetime(2025, 1, 1, tzinfo=UTC), 3)
    topics = Topics(prefix="p.")
    producer = _FakeProducer()
    stats = PublishStats()
    publish_records(producer, topics, sim.inventory(), sim.reports(), stats)  # type: ignore[arg-type]
    assert [t for t, _, _ in producer.sent[:80]] == [topics.inventory] * 80
    for topic, key, value in producer.sent[80:]:
        report = decode_report(value)
        assert key == report.device_id.encode()
        assert topic == (topics.mobile if report.source is ReportSource.MDM else topics.health)
        assert (topic == topics.mobile) == (report.kind in (DeviceKind.PHONE, DeviceKind.TABLET))  # simulated MDM
    assert stats.inventory == 80
    assert stats.health + stats.mobile == len(producer.sent) - 80
    assert stats.errors == []


def test_failed_sends_are_counted_not_lost_silently() -> None:
    sim = FleetSimulator(30, 5, datetime(2025, 1, 1, tzinfo=UTC), 2)
    topics = Topics()
    stats = PublishStats()
    publish_records(_FakeProducer(fail_topic=topics.mobile), topics, sim.inventory(), sim.reports(), stats)  # type: ignore[arg-type]
    assert stats.mobile > 0
    assert len(stats.errors) == stats.mobile
    assert "broker gone" in stats.errors[0]


def test_mdm_laptop_battery_rows_go_to_the_mobile_topic_its_principal_may_write() -> None:
    """Endpoint-analytics battery rows are Windows laptops: routed by kind, the MDM bridge's unsigned
    reports went to the agents' health topic (no write ACL for it; dead-lettered unauthenticated)."""
    export = (FIXTURES / "mdm" / "battery_health_device_performance.json").read_text()
    result = ingest_text(export, "graph-json", b"secret", SeqStore(":memory:"), datetime(2025, 3, 6, tzinfo=UTC))
    assert result.reports
    assert {r.kind for r in result.reports} == {DeviceKind.LAPTOP}
    topics, producer, stats = Topics(prefix="p."), _FakeProducer(), PublishStats()
    publish_records(producer, topics, result.inventory, result.reports, stats, mdm=True)  # type: ignore[arg-type]
    assert [t for t, _, _ in producer.sent if t != topics.mobile_inventory] == [topics.mobile] * len(result.reports)
    assert (stats.health, stats.mobile) == (0, len(result.reports))
    assert all(mdm_inventory_refusal(i.device_id, i.kind) is None for i in result.inventory), "consumers join them"


def test_the_mdm_bridge_never_writes_its_inventory_to_the_register() -> None:
    """Its principal may write only the mobile topics: a record on IT's register would be refused by Kafka."""
    export = (FIXTURES / "mdm" / "managed_devices_pages.json").read_text()
    result = ingest_text(export, "graph-json", b"secret", SeqStore(":memory:"), datetime(2025, 3, 6, tzinfo=UTC))
    assert result.inventory
    topics, producer = Topics(prefix="p."), _FakeProducer()
    publish_records(producer, topics, result.inventory, result.reports, PublishStats(), mdm=True)  # type: ignore[arg-type]
    assert {t for t, _, _ in producer.sent} == {topics.mobile_inventory, topics.mobile}
    inventory = [k for t, k, _ in producer.sent if t == topics.mobile_inventory]
    assert inventory == [i.device_id.encode() for i in result.inventory]

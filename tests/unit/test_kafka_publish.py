"""Routing and failure accounting of the bulk publisher (a fake producer; the real broker is in integration)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fleetpulse.agents.kafka_publish import PublishStats, publish_records
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.contract import DeviceKind, Topics, decode_report


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


def test_reports_are_routed_by_device_kind_after_the_inventory() -> None:
    sim = FleetSimulator(80, 5, datetime(2025, 1, 1, tzinfo=UTC), 3)
    topics = Topics(prefix="p.")
    producer = _FakeProducer()
    stats = PublishStats()
    publish_records(producer, topics, sim.inventory(), sim.reports(), stats)  # type: ignore[arg-type]
    assert [t for t, _, _ in producer.sent[:80]] == [topics.inventory] * 80
    for topic, key, value in producer.sent[80:]:
        report = decode_report(value)
        assert key == report.device_id.encode()
        mobile = report.kind in (DeviceKind.PHONE, DeviceKind.TABLET)
        assert topic == (topics.mobile if mobile else topics.health)
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

"""Prometheus gauges of the ticket outbox, read from the store at every scrape.

Served by the ticket consumer (``[alerts.consumer] metrics_port``), not by the API: the
consumer is the process that delivers the outbox and runs on the internal network only,
while the API faces users through the ingress and would need a role for the scraper.
The numbers come from the store, so every consumer replica reports the same backlog
(alert on ``max``, not ``sum``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetpulse.alerts.store.repository import TicketStore


class OutboxCollector(Collector):
    def __init__(self, store: TicketStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "fleetpulse_tickets_outbox_pending", "undelivered outbox rows (incl. needs attention)", labels=["target"]
        )
        attention = GaugeMetricFamily(
            "fleetpulse_tickets_outbox_needs_attention",
            "undelivered rows an administrator must look at (rejected login, 4xx)",
            labels=["target"],
        )
        oldest = GaugeMetricFamily(
            "fleetpulse_tickets_outbox_oldest_pending_seconds", "age of the oldest undelivered row", labels=["target"]
        )
        now = self.clock()
        for backlog in self.store.outbox_backlog():
            pending.add_metric([backlog.target], backlog.pending)
            attention.add_metric([backlog.target], backlog.needs_attention)
            oldest.add_metric([backlog.target], max(0.0, (now - backlog.oldest_created_at).total_seconds()))
        yield pending
        yield attention
        yield oldest


def outbox_registry(store: TicketStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(OutboxCollector(store, clock))
    return registry

"""Prometheus gauges read from the ticket store at every scrape (the outbox and agent coverage), and the
consumer's own counters of records read and dead-lettered.

Served by the ticket consumer (``[alerts.consumer] metrics_port``), not by the API: the
consumer is the process that delivers the outbox and runs on the internal network only,
while the API faces users through the ingress and would need a role for the scraper.
The numbers come from the store, so every consumer replica reports the same values
(alert on ``max``, not ``sum``); the counters are each replica's own (``sum`` them).

Agent coverage comes from the store's inventory because it is the one place that knows
every device of the fleet with its site, whichever worker partition it lands on and
whatever restarted: the agent re-sends its inventory every day (``inventory_interval_s``),
so a device's ``updated_at`` is a daily heartbeat, and a device whose last inventory is
older than ``silent_after`` (default 48 h: one missed daily inventory plus 24 h) has not
reported for at least 24 h. The workers know each report, but only for their own
partitions and only after recovery, and the TSDB (which the dashboards' rollup reads)
is not something a Prometheus rule can query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC

if TYPE_CHECKING:
    from fleetpulse.alerts.consumer import ConsumerStats

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StoreCollector(Collector):
    def __init__(self, store: TicketStore, silent_after: timedelta, clock: Clock = _utc_now) -> None:
        self.store = store
        self.silent_after = silent_after
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        yield from self._outbox(now)
        yield from self._coverage(now)

    def _outbox(self, now: datetime) -> Iterator[Metric]:
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
        for backlog in self.store.outbox_backlog():
            pending.add_metric([backlog.target], backlog.pending)
            attention.add_metric([backlog.target], backlog.needs_attention)
            oldest.add_metric([backlog.target], max(0.0, (now - backlog.oldest_created_at).total_seconds()))
        yield pending
        yield attention
        yield oldest

    def _coverage(self, now: datetime) -> Iterator[Metric]:
        devices = GaugeMetricFamily("fleetpulse_tickets_devices", "inventoried devices", labels=["site"])
        silent = GaugeMetricFamily(
            "fleetpulse_tickets_devices_silent",
            "inventoried devices whose last daily inventory is older than [alerts.consumer] silent_after",
            labels=["site"],
        )
        for site in self.store.site_coverage(now - self.silent_after):
            devices.add_metric([site.site], site.devices)
            silent.add_metric([site.site], site.silent)
        yield devices
        yield silent


class ConsumerCollector(Collector):
    """What this consumer replica read and dead-lettered: its log has one line a minute on dead letters, so
    these counters are where a flood of bad records shows."""

    def __init__(self, stats: ConsumerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily("fleetpulse_tickets_consumer_records", "records read from Kafka")
        records.add_metric([], self.stats.records)
        dead = CounterMetricFamily(
            "fleetpulse_tickets_consumer_dead_letters", "records dead-lettered, by kind", labels=["kind"]
        )
        for kind, count in sorted(dict(self.stats.dead_letter_kinds).items()):
            dead.add_metric([kind], count)
        yield records
        yield dead


def store_registry(
    store: TicketStore, silent_after: timedelta, clock: Clock = _utc_now, stats: ConsumerStats | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, silent_after, clock))
    if stats is not None:
        registry.register(ConsumerCollector(stats))
    return registry

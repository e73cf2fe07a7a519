"""Bulk publishing of simulated or MDM-imported records to Kafka (server-side tools, not the agent).

Why a module of its own: the simulator command, the demo and the MDM bridge all need the
same durable producer (acks=all, idempotent ordering per key, batching, compression) and
the same routing of reports to the agents' health topic or the MDM bridge's mobile topic.
Inventory goes to IT's register (the simulator and the demo play IT), or with ``mdm=True``
to the MDM bridge's own inventory topic: its principal may not write the register.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kafka import KafkaProducer

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.config import KafkaSettings, kafka_python_security
from fleetpulse.contract import DeviceInventory, HealthReport, ReportSource, Topics, encode, report_key

if TYPE_CHECKING:
    from fleetpulse.agents.simulator import FleetSimulator
    from fleetpulse.streams.settings import StreamSettings


def make_producer(kafka: KafkaSettings) -> KafkaProducer:
    """A producer tuned for bulk throughput without losing durability."""
    return KafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers.split(","),
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type="gzip",
        enable_idempotence=True,  # retries neither duplicate nor reorder a device's records
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=kafka.request_timeout_ms,
        **kafka_python_security(kafka),
    )


def report_topic(topics: Topics, report: HealthReport) -> str:
    """By sender, not device kind: the MDM bridge's reports (laptops' battery rows too) carry no device MAC, and
    its principal may write the mobile topic only; everything else is an agent's, MACed on the health topic."""
    return topics.mobile if report.source is ReportSource.MDM else topics.health


@dataclass
class PublishStats:
    inventory: int = 0
    enrolments: int = 0
    health: int = 0
    mobile: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def reports(self) -> int:
        return self.health + self.mobile

    @property
    def per_second(self) -> float:
        return (self.inventory + self.reports) / self.seconds if self.seconds > 0 else 0.0


class _Failures:
    """Collects asynchronous send failures (bounded) so no loss is silent."""

    def __init__(self, stats: PublishStats) -> None:
        self.stats = stats

    def __call__(self, exc: BaseException) -> None:
        if len(self.stats.errors) < 100:
            self.stats.errors.append(repr(exc))


def publish_records(
    producer: KafkaProducer,
    topics: Topics,
    inventory: Iterable[DeviceInventory],
    reports: Iterable[HealthReport],
    stats: PublishStats,
    on_record: Callable[[], None] | None = None,
    device_keys: Callable[[str], bytes] | None = None,
    mdm: bool = False,
) -> None:
    """Send inventory first (so consumers can join), then reports in their given order.

    ``mdm``: the MDM bridge publishes, its inventory goes to its own topic (else to IT's register).

    Agents' reports go out as their agent would send them: MACed with ``device_keys(device_id)``, the
    device enrolled just before its first one. Without ``device_keys`` only the MDM bridge's reports
    (on the mobile topic, authenticated by its Kafka principal) are accepted downstream.
    """
    failed = _Failures(stats)
    enrolled: set[str] = set()
    inventory_topic = topics.mobile_inventory if mdm else topics.inventory
    for item in inventory:
        payload = encode(item)
        producer.send(inventory_topic, key=report_key(item.device_id), value=payload).add_errback(failed)
        stats.inventory += 1
        stats.bytes += len(payload)
    for report in reports:
        topic = report_topic(topics, report)
        if topic == topics.health and device_keys is not None:
            device_key = device_keys(report.device_id)
            if report.device_id not in enrolled:
                enrolment = enrolment_record(report.device_id, device_key, report.collected_at)
                send = producer.send(topic, key=enrolment.key, value=enrolment.value, headers=enrolment.headers)
                send.add_errback(failed)
                enrolled.add(report.device_id)
                stats.enrolments += 1
            record = signed_report(report, device_key)
            payload = record.value
            producer.send(topic, key=record.key, value=payload, headers=record.headers).add_errback(failed)
        else:
            payload = encode(report)
            producer.send(topic, key=report_key(report.device_id), value=payload).add_errback(failed)
        if topic == topics.mobile:
            stats.mobile += 1
        else:
            stats.health += 1
        stats.bytes += len(payload)
        if on_record is not None:
            on_record()


def publish_fleet(
    sim: FleetSimulator, kafka_settings: KafkaSettings, streams: StreamSettings, progress: bool = True
) -> PublishStats:
    """Publish a :class:`~fleetpulse.agents.simulator.FleetSimulator`'s inventory and reports.

    Missing topics are created as the worker would create them (``streams`` partitions and
    replication). Blocks until every record is acknowledged (acks=all); failures end up in ``errors``.
    """
    from fleetpulse.streams.kafka_admin import create_configured_topics

    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_configured_topics(kafka_settings, streams)
    stats = PublishStats()
    producer = make_producer(kafka_settings)
    started = time.perf_counter()
    try:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            expected = len(sim) * sim.rounds
            with Progress(
                TextColumn("[bold]simulating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("reports"),
                TimeRemainingColumn(),
            ) as bar:
                task = bar.add_task("reports", total=expected)
                counter = [0]

                def tick() -> None:
                    counter[0] += 1
                    if counter[0] % 2000 == 0:
                        bar.update(task, completed=min(expected, counter[0]))

                publish_records(producer, topics, sim.inventory(), sim.reports(), stats, tick, sim.device_key)
                bar.update(task, total=stats.reports, completed=stats.reports)  # the estimate gives way to the count
        else:
            publish_records(producer, topics, sim.inventory(), sim.reports(), stats, device_keys=sim.device_key)
        producer.flush()
    finally:
        producer.close()
    stats.seconds = time.perf_counter() - started
    return stats

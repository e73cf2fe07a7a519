"""Kafka -> ticket store: alerts open/update tickets, inventory keeps device facts, scores feed the history plot,
the feature log feeds fleet retraining.

Device facts come from IT's register and from the MDM bridge's own inventory topic; a record on the
latter counts only for the bridge's devices (``mdm_inventory_refusal``), so a leaked bridge certificate
cannot move a PC into another site's ticket scope or change its warranty (repair or replace).

At-least-once and still exact: offsets are committed only after the store committed,
and a redelivered (or replayed) alert is recognised by its ``alert_id``, so it never
opens a second ticket. Records that do not decode, or hold a value the store refuses, go to
the dead-letter topic with the reason and are never retried forever or dropped silently.
Between polls the consumer also works off the outbox (ITSM connectors and the labels topic).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import DataError, IntegrityError

from fleetpulse.alerts.connectors import Connector, build
from fleetpulse.alerts.fleetlog import FleetLog
from fleetpulse.alerts.labels import LabelPublisher, kafka_client_options
from fleetpulse.alerts.outbox import OutcomeSink, deliver_due
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.auth import mdm_inventory_refusal
from fleetpulse.contract.codec import ContractError, decode, encode
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import Alert, DeadLetter, DeviceInventory, FeatureLogRecord, RiskScore
from fleetpulse.logs import RefusalWarnings
from fleetpulse.streams.settings import StreamSettings

log = logging.getLogger(__name__)
DEAD_LETTERS_LOGGED_EVERY_S = 60.0
"""One log line a minute at most for dead-lettered records, with the count since the last: each one is on the
dead-letter topic with its reason, and a flood of bad records (a leaked MDM credential) must not fill the log."""
Clock = Callable[[], datetime]
T = TypeVar("T")
REFUSED_BY_STORE = (DataError, IntegrityError)
"""The store refusing a value (too long, a NUL character, a constraint): the record's fault, so it is
dead-lettered. Connection errors (OperationalError, InterfaceError) are not among them: they propagate,
nothing is committed, and the consumer restarts and re-reads."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ConsumerStats:
    records: int = 0
    results: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    """dead letters by error kind (the contract's kinds: a bounded set), for the consumer's metrics"""
    delivered: int = 0
    delivery_failures: int = 0

    def add(self, result: str, n: int = 1) -> None:
        if n:
            self.results[result] = self.results.get(result, 0) + n


def future_dated(inventory: DeviceInventory, now: datetime, skew: timedelta) -> str | None:
    """Why ``inventory`` is refused, or None: dated beyond the clock-skew tolerance, it would
    outrank every correct update of the device until that date (the stream worker's rule)."""
    if inventory.updated_at <= now + skew:
        return None
    return f"updated_at {inventory.updated_at.isoformat()} is ahead of receive time {now.isoformat()}"


class TicketConsumer:
    """One consumer-group member; several can run side by side (records are keyed by device id)."""

    def __init__(
        self,
        settings: AlertSettings,
        kafka: KafkaSettings,
        streams: StreamSettings,
        store: TicketStore | None = None,
        connectors: Mapping[str, Connector] | None = None,
        labels: OutcomeSink | None = None,
        clock: Clock = utc_now,
        stats: ConsumerStats | None = None,
    ) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        from fleetpulse.streams.kafka_admin import create_configured_topics

        self.settings = settings
        self.kafka = kafka
        self.topics = Topics(prefix=kafka.topic_prefix)
        self.clock = clock
        self.stats = stats or ConsumerStats()
        self._last_delivery = float("-inf")
        self._last_prune = float("-inf")  # prune at start, then hourly
        self._dead_lettered = RefusalWarnings(log, "records dead-lettered", DEAD_LETTERS_LOGGED_EVERY_S)
        self._own_store = store is None
        self.store = store or TicketStore.open(settings.store_url)
        self._closers: list[Callable[[], None]] = [self.store.close] if self._own_store else []
        try:
            self.service = TicketService(self.store, settings)
            self.fleet_log = FleetLog(self.store)
            self.connectors = (
                dict(connectors) if connectors is not None else {c.name: build(c) for c in settings.connectors}
            )
            # first: where Kafka turns this client away (TLS, credentials), this says why, at once
            create_configured_topics(kafka, streams)
            if labels is None:
                publisher = LabelPublisher(kafka)
                self._closers.append(publisher.close)
                labels = publisher
            self.labels: OutcomeSink = labels
            options = kafka_client_options(kafka)
            self.dead_letters = KafkaProducer(acks="all", **options)
            self._closers.append(lambda: self.dead_letters.close(timeout=5))
            self.consumer = KafkaConsumer(
                group_id=f"{kafka.topic_prefix}{settings.consumer.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=500,
                metadata_max_age_ms=5_000,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
                **options,
            )
            self._closers.append(self.consumer.close)
            self.consumer.subscribe(
                [
                    self.topics.alerts,
                    self.topics.inventory,
                    self.topics.mobile_inventory,
                    self.topics.scores,
                    self.topics.features,
                ]
            )
        except BaseException:
            self.close()
            raise

    def poll_once(self) -> int:
        """Process one poll's records and commit them; returns how many records it saw.

        Within a poll, inventory goes first (tickets opened by the alerts then carry the
        device facts), alerts one transaction each, and risk history as one batch.
        """
        batches = self.consumer.poll(timeout_ms=self.settings.consumer.poll_timeout_ms)
        records = [record for partition_records in batches.values() for record in partition_records]
        inventory_topics = (self.topics.inventory, self.topics.mobile_inventory)
        inventory: list[tuple[Any, DeviceInventory]] = []
        alerts: list[tuple[Any, Alert]] = []
        scores: list[tuple[Any, RiskScore]] = []
        features: list[tuple[Any, FeatureLogRecord]] = []
        for record in records:
            if record.value is None and record.topic not in inventory_topics:
                self._dead_letter(record, "schema_violation", "empty record (tombstone) on a topic of events")
                continue
            try:
                if record.topic == self.topics.alerts:
                    alerts.append((record, decode(record.value, Alert)))
                elif record.topic in inventory_topics:
                    facts = decode(record.value, DeviceInventory) if record.value is not None else None
                    refused = self._inventory_refusal(record, facts)
                    if refused is not None:
                        self._dead_letter(record, *refused)
                    elif facts is not None:  # None = compaction tombstone (device retired): keep its history
                        inventory.append((record, facts))
                elif record.topic == self.topics.scores:
                    scores.append((record, decode(record.value, RiskScore)))
                elif record.topic == self.topics.features:
                    features.append((record, decode(record.value, FeatureLogRecord)))
            except ContractError as exc:
                self._dead_letter(record, exc.kind, exc.reason)
        if inventory:
            now = self.clock()
            not_after = now + self.settings.consumer.max_clock_skew
            applied, stored = self._store(
                inventory, lambda batch: self.service.apply_inventories(batch, not_after, now)
            )
            self.stats.add("inventory", applied)
            self.stats.add("inventory_stale", stored - applied)
        for record, alert in alerts:
            try:
                self.stats.add(self.service.apply_alert(alert, self.clock()))
            except REFUSED_BY_STORE as exc:
                self._dead_letter(record, "processing_error", _refusal(exc))
            except ValueError as exc:  # decoded but cannot be applied; connection errors propagate (no commit)
                self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}")
        if scores:
            kept, stored = self._store(scores, self.service.record_scores)
            self.stats.add("history", kept)
            self.stats.add("history_skipped", stored - kept)
        if features:
            logged, stored = self._store(features, self.fleet_log.record_features)
            self.stats.add("feature_log", logged)
            self.stats.add("feature_log_repeated", stored - logged)
        if records:
            self.dead_letters.flush(timeout=30)
            self.consumer.commit()
        self.stats.records += len(records)
        self.deliver_outbox(force=False)
        if time.monotonic() - self._last_prune > 3600:
            self._last_prune = time.monotonic()
            self.stats.add("history_pruned", self.service.prune_history(self.clock()))
            retention = self.service.settings.consumer.audit_retention
            self.stats.add("audit_pruned", self.service.store.audit.prune(self.clock() - retention))
            kept_for = self.service.settings.consumer.feature_log_retention
            self.stats.add("feature_log_pruned", self.fleet_log.prune_features(self.clock(), kept_for))
        return len(records)

    def deliver_outbox(self, force: bool = True) -> None:
        """Work off due outbox rows; without ``force`` at most once per second between polls."""
        if not force and time.monotonic() - self._last_delivery < 1.0:
            return
        self._last_delivery = time.monotonic()
        report = deliver_due(
            self.store,
            self.connectors,
            self.labels,
            self.settings.outbox,
            self.clock(),
            budget_s=None if force else 20.0,
        )
        self.stats.delivered += report.delivered
        self.stats.delivery_failures += report.failed
        self.stats.add("outbox_needs_attention", report.needs_attention)

    def caught_up(self) -> bool:
        """True when every assigned partition has been read to its end."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        ends = self.consumer.end_offsets(list(assigned))
        return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)

    def _inventory_refusal(self, record: Any, facts: DeviceInventory | None) -> tuple[str, str] | None:
        """(error kind, reason) of an inventory record the store must not apply (``facts`` None: a tombstone).

        Like the stream worker: the MDM bridge's topic names only the bridge's devices, and a record
        dated ahead would outrank every correct update of its device until that date.
        """
        if record.topic == self.topics.mobile_inventory:
            device_id = facts.device_id if facts is not None else (record.key or b"").decode(errors="replace")
            reason = mdm_inventory_refusal(device_id, facts.kind if facts is not None else None)
            if reason is not None:
                return "unauthenticated", reason
        if facts is not None and (reason := future_dated(facts, self.clock(), self.settings.consumer.max_clock_skew)):
            return "clock_skew", reason
        return None

    def _store(self, batch: Sequence[tuple[Any, T]], write: Callable[[Sequence[T]], int]) -> tuple[int, int]:
        """``write`` the batch in one transaction; returns what ``write`` counted and how many records the
        store took. If the store refuses the batch, each record is written on its own: only the ones it
        refuses are dead-lettered (with its reason), the others are kept, and the poll still commits."""
        try:
            return write([value for _, value in batch]), len(batch)
        except REFUSED_BY_STORE:
            log.warning(
                "ticket store refused a batch; writing its records one by one", extra={"fields": {"n": len(batch)}}
            )
        counted = stored = 0
        for record, value in batch:
            try:
                counted += write([value])
                stored += 1
            except REFUSED_BY_STORE as exc:
                self._dead_letter(record, "processing_error", _refusal(exc))
        return counted, stored

    def _dead_letter(self, record: Any, kind: Any, reason: str) -> None:
        payload: bytes = record.value or b""
        letter = DeadLetter(
            reason=reason[:2048],
            error_kind=kind,
            source_topic=record.topic[:128],
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode(errors="replace")[:128] if record.key else None,
            payload_excerpt=payload[:1024].decode(errors="backslashreplace")[:4096],
            payload_bytes=len(payload),
            received_at=self.clock(),
        )
        self.dead_letters.send(self.topics.dead_letter, key=record.key, value=encode(letter))
        self.stats.dead_letters += 1
        kinds = self.stats.dead_letter_kinds
        kinds[letter.error_kind] = kinds.get(letter.error_kind, 0) + 1
        self._dead_lettered.refused(
            {"topic": record.topic, "offset": record.offset, "kind": kind, "reason": reason[:300]}
        )

    def close(self) -> None:
        """Close what this consumer opened, newest first; uncommitted records are re-read by the next one."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # closing must not mask the error that made us close
                log.exception("error while closing the ticket consumer")


def _refusal(exc: DataError | IntegrityError) -> str:
    """The database's own first line (e.g. "value too long for type character varying(64)"), without the
    statement and parameters SQLAlchemy appends: the dead letter already carries the record."""
    first = next(iter(str(exc.orig).splitlines()), "")
    return f"the ticket store refused the record ({type(exc).__name__}: {first})"


def run_consumer(
    settings: AlertSettings,
    kafka: KafkaSettings,
    streams: StreamSettings,
    stop: threading.Event,
    connectors: Mapping[str, Connector] | None = None,
    retry_s: float = 5.0,
    stats: ConsumerStats | None = None,
) -> ConsumerStats:
    """Consume until ``stop`` is set (the ``fleetpulse tickets consume`` loop).

    When the ticket store or Kafka becomes unreachable, the consumer is dropped without
    committing and rebuilt after ``retry_s``: it resumes at the last committed offsets and
    the alert-id dedup makes the re-read records harmless.
    """
    from kafka.errors import KafkaError
    from sqlalchemy.exc import InterfaceError, OperationalError

    stats = stats or ConsumerStats()
    while not stop.is_set():
        consumer: TicketConsumer | None = None
        try:
            consumer = TicketConsumer(settings, kafka, streams, connectors=connectors, stats=stats)
            while not stop.is_set():
                consumer.poll_once()
            consumer.deliver_outbox()
        except (OperationalError, InterfaceError, KafkaError) as exc:
            stats.add("restarts")
            log.error(
                "ticket consumer lost the store or Kafka; restarting from the committed offsets",
                extra={"fields": {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "retry_s": retry_s}},
            )
            stop.wait(retry_s)
        finally:
            if consumer is not None:
                consumer.close()
    return stats


def consume_until_idle(
    settings: AlertSettings,
    kafka: KafkaSettings,
    streams: StreamSettings,
    idle_seconds: float = 5.0,
    max_seconds: float = 300.0,
    connectors: Mapping[str, Connector] | None = None,
    stats: ConsumerStats | None = None,
) -> ConsumerStats:
    """Consume until every partition is read to its end and nothing new came for ``idle_seconds``.

    For the demo and tests: returns when the ticket store reflects everything on the topics.
    """
    consumer = TicketConsumer(settings, kafka, streams, connectors=connectors, stats=stats)
    try:
        started = last_record = time.monotonic()
        while time.monotonic() - started < max_seconds:
            if consumer.poll_once():
                last_record = time.monotonic()
            elif time.monotonic() - last_record >= idle_seconds and consumer.caught_up():
                break
        consumer.deliver_outbox()
        return consumer.stats
    finally:
        consumer.close()

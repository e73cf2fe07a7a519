"""Spool -> Kafka: in order, acknowledged by all in-sync replicas before a record leaves the spool.

The producer is idempotent (``acks=all``), gzip-compressed (stdlib codec, no extra library) and
lingers briefly to batch. A failed attempt closes the producer so the next one starts from a clean
session; records the broker did not acknowledge stay spooled and go again later (at-least-once,
duplicates carry the same ``(device_id, seq)`` and are dropped downstream).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from fleetpulse.agents.settings import DeliverySettings
from fleetpulse.agents.spool import Spool, SpooledRecord
from fleetpulse.config import KafkaSettings, kafka_python_security
from fleetpulse.contract import Topics

log = logging.getLogger(__name__)


def producer_config(kafka: KafkaSettings, delivery: DeliverySettings, client_id: str) -> dict[str, Any]:
    """kafka-python settings; TLS, SASL/SCRAM and mTLS come from :class:`KafkaSettings` only."""
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if delivery.compression == "none" else delivery.compression,
        "linger_ms": delivery.linger_ms,
        "batch_size": delivery.batch_size,
        "max_block_ms": delivery.max_block_ms,
        # the constructor probes the broker; a dead broker must cost no more than a blocked send
        "bootstrap_timeout_ms": delivery.max_block_ms,
        "request_timeout_ms": kafka.request_timeout_ms,
        "delivery_timeout_ms": max(delivery.delivery_timeout_ms, kafka.request_timeout_ms + delivery.linger_ms),
        "retry_backoff_ms": 500,
        "reconnect_backoff_ms": 500,
        "reconnect_backoff_max_ms": 10_000,
        **kafka_python_security(kafka),
    }
    return config


class Signer(Protocol):
    """Authenticates this device's records (``fleetpulse.agents.identity.RecordSigner``)."""

    def headers(self, stream: str, value: bytes) -> list[tuple[str, bytes]]: ...

    def enrolment(self) -> tuple[bytes, bytes]:
        """(key, value) of the record that enrols this device's key."""
        ...


@dataclass
class Backoff:
    """Exponential backoff with jitter, so 26,000 agents do not reconnect in lockstep after an outage."""

    initial_s: float
    max_s: float
    failures: int = 0
    not_before: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float) -> float:
        delay: float = min(self.max_s, self.initial_s * 2.0**self.failures) * random.uniform(0.5, 1.0)
        self.failures += 1
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0


@dataclass(frozen=True)
class DrainResult:
    delivered: int
    error: str | None = None


class Delivery:
    def __init__(
        self, kafka: KafkaSettings, delivery: DeliverySettings, client_id: str, signer: Signer | None = None
    ) -> None:
        self.kafka = kafka
        self.settings = delivery
        self.client_id = client_id
        self.signer = signer
        self.topics = Topics(prefix=kafka.topic_prefix)
        # the agent's inventory goes with its reports, MACed: agents may write the health topic only
        self._streams = {"health": self.topics.health, "inventory": self.topics.health, "enrolment": self.topics.health}
        self._producer: KafkaProducer | None = None

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                producer.close(timeout=timeout_s)
            except Exception:  # closing a broken session must never take the agent down
                log.debug("producer close failed", exc_info=True)

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.kafka, self.settings, self.client_id))
        return self._producer

    def drain(self, spool: Spool, budget_s: float | None = None) -> DrainResult:
        """Send spooled records oldest first until the spool is empty, an error occurs or ``budget_s`` passes."""
        deadline = time.monotonic() + (budget_s if budget_s is not None else float("inf"))
        delivered = 0
        while time.monotonic() < deadline:
            batch = spool.peek(self.settings.max_batch_records)
            if not batch:
                return DrainResult(delivered)
            try:
                acked, error = self._send_batch(batch)
            except Exception as exc:  # any client failure: keep the records, retry later on a fresh producer
                acked, error = [], f"{type(exc).__name__}: {exc}"
            spool.ack(acked)
            delivered += len(acked)
            if error is not None:
                self.close(timeout_s=0)
                return DrainResult(delivered, error)
        return DrainResult(delivered)

    def _send_batch(self, batch: list[SpooledRecord]) -> tuple[list[int], str | None]:
        """Returns the ids of the longest acknowledged prefix of ``batch`` and the first error, if any."""
        fresh = self._producer is None
        producer = self._get_producer()
        futures = []
        error: str | None = None
        if fresh and self.signer is not None:
            # every session starts with the enrolment: same partition, so the worker pins the key
            # before it reads any report of this session (repeats are no-ops there)
            key, value = self.signer.enrolment()
            enrolment = producer.send(
                self.topics.health, value=value, key=key, headers=self.signer.headers("enrolment", value)
            )
        for record in batch:
            headers = [("seq", str(record.seq).encode())] if record.seq is not None else []
            if self.signer is not None:
                headers.extend(self.signer.headers(record.stream, record.value))
            try:
                futures.append(
                    producer.send(self._streams[record.stream], value=record.value, key=record.key, headers=headers)
                )
            except KafkaError as exc:
                error = f"send: {type(exc).__name__}: {exc}"
                break
        try:
            producer.flush(timeout=self.settings.flush_timeout_s)
        except KafkaError as exc:
            error = error or f"flush: {type(exc).__name__}: {exc}"
        acked: list[int] = []
        if fresh and self.signer is not None and (not enrolment.is_done or enrolment.failed()):
            self.close(timeout_s=0)  # the next attempt opens a new session and enrols again
            return acked, error or "enrolment not acknowledged"
        for record, future in zip(batch, futures, strict=False):
            if not future.is_done or future.failed():
                failure = future.exception if future.is_done else None
                error = (
                    error or f"not acknowledged: {type(failure).__name__ if failure else 'timeout'}: {failure or ''}"
                )
                break
            acked.append(record.id)
        return acked, error

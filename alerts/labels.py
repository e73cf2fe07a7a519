"""Publishes ticket outcomes (confirmed fault / no fault found / false alarm) to the labels topic.

Outcomes reach Kafka through the outbox like any connector message, so closing a ticket
while Kafka is down still yields its training label later.
"""

from __future__ import annotations

from typing import Any

from fleetpulse.alerts.connectors.base import DeliveryError
from fleetpulse.config import KafkaSettings, kafka_python_security
from fleetpulse.contract.codec import encode, report_key
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import TicketOutcome


def kafka_client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python connection options from the shared settings (TLS/SASL never hard-coded)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "request_timeout_ms": kafka.request_timeout_ms,
        **kafka_python_security(kafka),
    }
    return options


class LabelPublisher:
    """The outbox target ``labels``: one TicketOutcome record per closed ticket, keyed by device id."""

    name = "labels"

    def __init__(self, kafka: KafkaSettings) -> None:
        from kafka import KafkaProducer

        self.topic = Topics(prefix=kafka.topic_prefix).labels
        self.producer = KafkaProducer(
            acks="all",
            retries=3,
            max_block_ms=kafka.request_timeout_ms,
            **kafka_client_options(kafka),
        )

    def publish(self, outcome: TicketOutcome) -> str:
        try:
            meta = self.producer.send(self.topic, key=report_key(outcome.device_id), value=encode(outcome)).get(
                timeout=30
            )
        except Exception as exc:  # kafka-python raises a zoo of KafkaError subclasses and timeouts
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        return f"{meta.topic}/{meta.partition}/{meta.offset}"

    def close(self) -> None:
        self.producer.close(timeout=5)

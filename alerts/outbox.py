"""Delivers outbox rows to their targets with retries and exponential backoff.

A row leaves the pending set only when its target confirmed it; an ITSM that is down
for hours only delays delivery (attempts back off up to ``backoff_max``), nothing is lost.
Connectors are handed in, so tests and the demo can deliver with whatever is configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.repository import OutboxView, TicketStore
from fleetpulse.contract.v1 import TicketOutcome

log = logging.getLogger(__name__)


class OutcomeSink(Protocol):
    def publish(self, outcome: TicketOutcome) -> str: ...


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(settings: OutboxSettings, attempts: int) -> timedelta:
    """base * 2^(attempts-1), capped: 5 s, 10 s, 20 s, ... 15 min."""
    exponent = min(max(attempts - 1, 0), 30)
    delay: timedelta = settings.backoff_base * (2**exponent)
    return min(delay, settings.backoff_max)


def _send(row: OutboxView, connectors: Mapping[str, Connector], labels: OutcomeSink | None) -> str | None:
    if row.subject == "outcome":
        if labels is None:
            raise LookupError("no labels publisher configured")
        return labels.publish(TicketOutcome.model_validate(row.payload))
    connector = connectors.get(row.target)
    if connector is None:
        raise LookupError(f"connector {row.target!r} is not configured")
    return connector.deliver(Notification.model_validate(row.payload))


def deliver_due(
    store: TicketStore,
    connectors: Mapping[str, Connector],
    labels: OutcomeSink | None,
    settings: OutboxSettings,
    now: datetime,
    budget_s: float | None = None,
) -> DeliveryReport:
    """One pass over the rows that are due; rows for targets not configured here stay pending.

    A target that fails once in a pass is not tried again in it: its other due rows wait for
    the same backoff, so a down ITSM costs one timeout per pass, not one per ticket. With
    ``budget_s`` the pass stops early (the consumer must get back to polling Kafka).
    """
    report = DeliveryReport()
    targets = [*connectors, *(["labels"] if labels is not None else [])]
    down: set[str] = set()
    started = time.monotonic()
    for row in store.due_outbox(now, settings.batch, targets):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        if row.target in down:
            report.skipped += 1
            continue
        try:
            ref = _send(row, connectors, labels)
        except LookupError:
            report.skipped += 1
            continue
        except DeliveryError as exc:
            retry_at = now + backoff(settings, row.attempts + 1)
            attempts = store.mark_failed(row.id, str(exc), retry_at)
            store.defer_target(row.target, retry_at)
            down.add(row.target)
            report.failed += 1
            report.errors.append(f"{row.target}#{row.id}: {exc}")
            log.warning(
                "outbox delivery failed; will retry",
                extra={"fields": {"target": row.target, "outbox_id": row.id, "attempts": attempts, "error": str(exc)}},
            )
            continue
        store.mark_delivered(row.id, now, ref)
        report.delivered += 1
    return report

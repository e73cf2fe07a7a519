"""Delivers outbox rows to their targets, retrying with the project's one policy (:mod:`fleetpulse.retry`).

A row leaves the pending set only when its target confirmed it; an ITSM that is down
for hours only delays delivery (capped, jittered backoff up to ``backoff_max``), nothing is lost.
A failure retrying cannot fix (rejected login, a 4xx answer) is not retried at that rate:
the row is marked as needing attention with the reason, logged as an error, counted, and
tried again only after ``attention_recheck`` or when an administrator asks (outbox retry).
Connectors are handed in, so tests and the demo can deliver with whatever is configured.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification, PermanentDeliveryError, Receipt
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.repository import NEEDS_ATTENTION, OutboxView, TicketStore
from fleetpulse.contract.v1 import TicketOutcome
from fleetpulse.redact import scrub
from fleetpulse.retry import RetryPolicy

log = logging.getLogger(__name__)


class OutcomeSink(Protocol):
    def publish(self, outcome: TicketOutcome) -> str: ...


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    needs_attention: int = 0
    errors: list[str] = field(default_factory=list)


def retry_policy(settings: OutboxSettings) -> RetryPolicy:
    return RetryPolicy(base_s=settings.backoff_base.total_seconds(), cap_s=settings.backoff_max.total_seconds())


def next_attempt(
    settings: OutboxSettings, failures: int, now: datetime, rand: Callable[[], float] = random.random
) -> datetime:
    """When to try a row again after ``failures`` consecutive failures (finite for any count)."""
    return now + timedelta(seconds=retry_policy(settings).delay(failures, rand))


class TargetNotConfigured(LookupError):
    """The row's target is not configured in this process: the row stays pending for one that has it."""


def _send(
    store: TicketStore, row: OutboxView, connectors: Mapping[str, Connector], labels: OutcomeSink | None
) -> tuple[str | Receipt | None, Notification | None]:
    """What the target answered, and the notification it was handed (None for an outcome)."""
    if row.subject == "outcome":
        if labels is None:
            raise TargetNotConfigured("no labels publisher configured")
        return labels.publish(TicketOutcome.model_validate(row.payload)), None
    connector = connectors.get(row.target)
    if connector is None:
        raise TargetNotConfigured(f"connector {row.target!r} is not configured")
    notification = Notification.model_validate(row.payload)
    if notification.subject == "update":
        notification = _follow_up(store, row, notification)
    return connector.deliver(notification), notification


def _keep_incident_id(store: TicketStore, row: OutboxView, notification: Notification | None, receipt: Receipt) -> None:
    """An update that found its incident under another id than the stored one (the connector's lookup, after
    a 404 or without a stored id): the incident's row keeps that id, so the next update goes straight to it."""
    if notification is None or notification.subject != "update" or not receipt.record_id:
        return
    if receipt.record_id == notification.first_record_id:
        return
    if store.record_incident_id(row.target, notification.dedup_key, receipt.record_id):
        log.info(
            "incident found under another id; later updates address it by that one",
            extra={
                "fields": {"target": row.target, "incident": notification.dedup_key, "record_id": receipt.record_id}
            },
        )


def _follow_up(store: TicketStore, row: OutboxView, notification: Notification) -> Notification:
    """An update as a follow-up of the incident it is about: with what the target returned for that
    incident (a mail threads under the first one's Message-ID) and its title. An update queued
    before updates carried an id gets its row's key, which names it as well."""
    changes: dict[str, str | None] = {"update_id": notification.update_id or row.dedup_key}
    incident = store.incident_of(row.target, notification.dedup_key)
    if incident is not None:
        changes["first_reference"], changes["first_title"] = incident.reference, incident.title or None
        changes["first_record_id"] = incident.record_id
    return notification.model_copy(update=changes)


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
    Error texts are scrubbed again here (credential-looking material, length) before they
    are stored or logged; connectors already removed their own configured secrets.
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
            sent, notification = _send(store, row, connectors, labels)
        except TargetNotConfigured:
            report.skipped += 1
            continue
        except PermanentDeliveryError as exc:
            _needs_attention(store, settings, row, scrub(str(exc)), exc.whole_target, now, report, down)
            continue
        except DeliveryError as exc:
            _retry_later(store, settings, row, scrub(str(exc)), now, report, down)
            continue
        except Exception as exc:  # one row a connector cannot handle must not stop every delivery
            # no retry changes it: a hostile or broken answer, a payload the target cannot take
            _needs_attention(store, settings, row, scrub(f"{type(exc).__name__}: {exc}"), False, now, report, down)
            continue
        receipt = sent if isinstance(sent, Receipt) else Receipt(sent)
        store.mark_delivered(row.id, now, receipt.reference, receipt.record_id)
        _keep_incident_id(store, row, notification, receipt)
        report.delivered += 1
    return report


def _needs_attention(
    store: TicketStore,
    settings: OutboxSettings,
    row: OutboxView,
    reason: str,
    whole_target: bool,
    now: datetime,
    report: DeliveryReport,
    down: set[str],
) -> None:
    """A failure no retry fixes: the row waits for the recheck or an admin (the whole target too, for a login)."""
    recheck_at = now + settings.attention_recheck
    attempts = store.mark_failed(row.id, f"{NEEDS_ATTENTION}{reason}", recheck_at)
    if whole_target:
        store.defer_target(row.target, recheck_at)
        down.add(row.target)
    report.needs_attention += 1
    report.errors.append(f"{row.target}#{row.id}: {NEEDS_ATTENTION}{reason}")
    log.error(
        "outbox delivery needs attention; not retried until recheck or an admin retry",
        extra={
            "fields": {
                "target": row.target,
                "outbox_id": row.id,
                "attempts": attempts,
                "whole_target": whole_target,
                "recheck_at": recheck_at.isoformat(),
                "error": reason,
            }
        },
    )


def _retry_later(
    store: TicketStore,
    settings: OutboxSettings,
    row: OutboxView,
    reason: str,
    now: datetime,
    report: DeliveryReport,
    down: set[str],
) -> None:
    """The target could not take the row now (down, timeout, 5xx): it and the target's other rows wait a backoff."""
    retry_at = next_attempt(settings, row.attempts + 1, now)
    attempts = store.mark_failed(row.id, reason, retry_at)
    store.defer_target(row.target, retry_at)
    down.add(row.target)
    report.failed += 1
    report.errors.append(f"{row.target}#{row.id}: {reason}")
    log.warning(
        "outbox delivery failed; will retry",
        extra={"fields": {"target": row.target, "outbox_id": row.id, "attempts": attempts, "error": reason}},
    )

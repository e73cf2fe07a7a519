"""The fleet's own training data in the ticket store: feature log, failure reports, and labels.

Why the ticket store: the labels already live there (ticket outcomes, and the failures a
fleet manager records without a ticket), so a training job reads features and labels with
one SQL join from one place, with the store's backups, access control and retention job.

Label rules (the Backblaze protocol's censoring, applied to the fleet's own outcomes). A
component is known healthy up to the day labels are complete (``labelled_through``: failures
are recorded as ticket outcomes or failure reports, so an unrecorded failure does not exist),
unless one of these facts says otherwise:

- ticket closed ``done`` with ``confirmed_fault``: failure on the close day;
- ticket closed with ``no_fault_found`` or ``false_alarm``: negative up to the close day (the
  part was checked and kept; later days follow the default above);
- ticket still open, approved or ordered: censored from the day it opened (the part is under
  suspicion and may be swapped before it fails; nothing after that day is a negative);
- failure report ``failed`` (a failure no ticket predicted): failure on the reported day;
- failure report ``retired``: every component of the device censored at the retirement day
  (a retirement is not a failure).

The earliest failure of a component wins. A training row at day ``d`` is positive when the
component fails within the horizon after ``d``, negative when it is known healthy through
``d`` + horizon, and left out otherwise; rows after a failure are left out (see
:func:`row_label`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from fleetpulse.alerts.store.audit import AuditContext, AuditKind, stage
from fleetpulse.alerts.store.models import Device, FailureReport, FeatureLogRow, TicketRow
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.contract.v1 import Component, FeatureLogRecord, TicketState

log = logging.getLogger(__name__)
ReportOutcome = Literal["failed", "retired"]


@dataclass(frozen=True)
class ComponentLabel:
    """What is known of one component's fate beyond the default (healthy through ``labelled_through``)."""

    failed_on: date | None = None
    censored_on: date | None = None


LabelKey = tuple[str, str, str]
"""(device id, component, component id); a retirement uses component ``device`` and id ``""``."""


@dataclass(frozen=True)
class Outcome:
    """One fact about a component from a ticket or a failure report."""

    device_id: str
    component: str
    component_id: str
    on_day: date
    kind: Literal["failure", "healthy", "open", "retired"]


def ticket_fact(state: str, outcome: str | None) -> Literal["failure", "healthy", "open"] | None:
    """The fact a ticket gives: its outcome once closed, "open" while it is not (None: closed without one)."""
    if state not in (TicketState.DONE.value, TicketState.DISMISSED.value):
        return "open"
    if outcome is None:
        return None
    return "failure" if outcome == "confirmed_fault" else "healthy"


def combine(outcomes: Iterable[Outcome]) -> tuple[dict[LabelKey, ComponentLabel], dict[str, date]]:
    """Per component its earliest failure and earliest censoring; per device its retirement day."""
    failed: dict[LabelKey, date] = {}
    censored: dict[LabelKey, date] = {}
    retired: dict[str, date] = {}
    for fact in outcomes:
        key = (fact.device_id, fact.component, fact.component_id)
        if fact.kind == "failure":
            failed[key] = min(failed.get(key, fact.on_day), fact.on_day)
        elif fact.kind == "open":
            censored[key] = min(censored.get(key, fact.on_day), fact.on_day)
        elif fact.kind == "retired":
            retired[fact.device_id] = min(retired.get(fact.device_id, fact.on_day), fact.on_day)
    labels = {key: ComponentLabel(failed.get(key), censored.get(key)) for key in failed.keys() | censored.keys()}
    return labels, retired


def row_label(
    day: date,
    horizon_days: int,
    label: ComponentLabel | None,
    retired_on: date | None,
    labelled_through: date,
) -> float | None:
    """1.0 (fails within the horizon after ``day``), 0.0 (known healthy through it) or None (unknown)."""
    label = label or ComponentLabel()
    stops = [d for d in (label.censored_on, retired_on) if d is not None]
    if label.failed_on is not None and (retired_on is None or retired_on >= label.failed_on):
        if day > label.failed_on:
            return None
        if (label.failed_on - day).days <= horizon_days:
            return 1.0
    known_until = min([labelled_through, *stops])
    if label.failed_on is not None:
        known_until = min(known_until, label.failed_on)
    return 0.0 if day + timedelta(days=horizon_days) <= known_until else None


class FleetLog:
    """Feature log and failure reports of one ticket store."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    def record_features(self, records: Sequence[FeatureLogRecord]) -> int:
        """Insert the records whose ``log_key`` is new (the first daily record of a day stays); returns how many."""
        unique = {r.log_key(): r for r in reversed(records)}  # first occurrence in the batch wins
        if not unique:
            return 0
        try:
            return self._insert(unique)
        except IntegrityError:
            # another consumer inserted some of the keys between our read and our write: one by one
            return sum(self._insert({key: record}) for key, record in unique.items())

    def _insert(self, records: dict[str, FeatureLogRecord]) -> int:
        try:
            with self.store.session() as session:
                known = set(
                    session.execute(select(FeatureLogRow.log_key).where(FeatureLogRow.log_key.in_(records))).scalars()
                )
                new = [_row(key, r) for key, r in records.items() if key not in known]
                session.add_all(new)
                return len(new)
        except IntegrityError:
            if len(records) == 1:
                return 0
            raise

    def prune_features(self, now: datetime, retention: timedelta) -> int:
        """Drop feature-log rows older than ``retention`` (deploy/retention.yaml: ``feature_log_days``)."""
        with self.store.session() as session:
            result = session.execute(delete(FeatureLogRow).where(FeatureLogRow.collected_at < now - retention))
            return int(getattr(result, "rowcount", 0) or 0)

    def record_failure(
        self,
        device_id: str,
        component: Component,
        component_id: str,
        on_day: date,
        outcome: ReportOutcome,
        note: str,
        context: AuditContext,
        now: datetime,
    ) -> bool:
        """Store a failure report and its audit record in one transaction; False if the same report exists."""
        payload = {
            "device_id": device_id,
            "component": component.value,
            "component_id": component_id,
            "on_day": on_day.isoformat(),
            "outcome": outcome,
            "note": note,
        }
        try:
            with self.store.session() as session:
                session.add(
                    FailureReport(
                        device_id=device_id,
                        component=component.value,
                        component_id=component_id,
                        on_day=on_day,
                        outcome=outcome,
                        note=note,
                        recorded_by=context.actor.display_name[:128],
                        recorded_at=now,
                    )
                )
                session.flush()
                stage(session, AuditKind.FAILURE_REPORT, context, payload)
        except IntegrityError:
            return False
        return True

    def outcomes(self) -> list[Outcome]:
        """Every fact of closed tickets and failure reports (the label rules' input)."""
        out: list[Outcome] = []
        with self.store.session() as session:
            tickets = session.execute(
                select(
                    TicketRow.device_id, TicketRow.component, TicketRow.component_id, TicketRow.state, TicketRow.outcome,
                    TicketRow.opened_at, TicketRow.updated_at,
                )
            ).all()  # fmt: skip
            reports = session.execute(
                select(
                    FailureReport.device_id,
                    FailureReport.component,
                    FailureReport.component_id,
                    FailureReport.on_day,
                    FailureReport.outcome,
                )
            ).all()
        for device_id, component, component_id, state, outcome, opened_at, updated_at in tickets:
            fact = ticket_fact(state, outcome)
            if fact is not None:
                on_day = opened_at.date() if fact == "open" else updated_at.date()
                out.append(Outcome(device_id, component, component_id, on_day, fact))
        for device_id, component, component_id, on_day, outcome in reports:
            kind: Literal["failure", "retired"] = "failure" if outcome == "failed" else "retired"
            out.append(Outcome(device_id, component, component_id, on_day, kind))
        return out

    def labels(self) -> tuple[dict[LabelKey, ComponentLabel], dict[str, date]]:
        return combine(self.outcomes())

    def feature_rows(
        self, component: Component, since: date | None = None, registered_only: bool = True
    ) -> list[FeatureLogRow]:
        """The feature log of ``component`` (oldest first), optionally from ``since``; by default of the
        devices in IT's register only: an agent can enrol any new id and report anything about it, but
        cannot register it, so ids minted to outvote the fleet never reach training."""
        query = select(FeatureLogRow).where(FeatureLogRow.component == component.value)
        if registered_only:
            query = query.where(FeatureLogRow.device_id.in_(select(Device.device_id)))
        if since is not None:
            query = query.where(FeatureLogRow.day >= since)
        with self.store.session() as session:
            return list(session.execute(query.order_by(FeatureLogRow.collected_at, FeatureLogRow.id)).scalars())


def _row(key: str, record: FeatureLogRecord) -> FeatureLogRow:
    return FeatureLogRow(
        log_key=key,
        device_id=record.device_id,
        component=record.component.value,
        component_id=record.component_id,
        hardware_model=record.hardware_model,
        day=record.day,
        reason=record.reason.value,
        features=dict(record.features),
        risk=record.risk,
        model_name=record.model_name,
        model_version=record.model_version,
        collected_at=record.collected_at,
        scored_at=record.scored_at,
        report_seq=record.report_seq,
    )

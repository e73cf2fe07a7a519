"""The ticket rules: alerts open and update tickets, people move them through their lifecycle.

Everything that must happen together happens in one database transaction: the ticket,
its event and audit-trail record, the "alert seen" mark and the outbox rows for the connectors and the
labels topic. A crash in between therefore loses nothing and duplicates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleetpulse.alerts import actions, storm
from fleetpulse.alerts.connectors.base import (
    Notification,
    StormSummary,
    replan_notification,
    storm_notification,
    ticket_notification,
    update_notification,
)
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.audit import SYSTEM_CONTEXT, AuditActor, AuditContext, AuditKind, stage, ticket_kind
from fleetpulse.alerts.store.models import (
    AlertSeen,
    Device,
    OutboxRow,
    RiskPoint,
    StormGroup,
    TicketEvent,
    TicketRow,
)
from fleetpulse.alerts.store.repository import OPEN_STATES, TicketStore, TicketView, inventory_of, open_key
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import (
    Alert,
    AlertState,
    Component,
    DeviceInventory,
    RiskScore,
    Ticket,
    TicketOutcome,
    TicketState,
)

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "fleetpulse"
LABELS_TARGET = "labels"
Outcome = Literal["confirmed_fault", "no_fault_found", "false_alarm"]
ApplyResult = Literal["opened", "updated", "cleared", "cleared_without_ticket", "duplicate"]

TRANSITIONS: dict[TicketState, frozenset[TicketState]] = {
    TicketState.OPEN: frozenset({TicketState.APPROVED, TicketState.DISMISSED}),
    TicketState.APPROVED: frozenset({TicketState.ORDERED, TicketState.DISMISSED}),
    TicketState.ORDERED: frozenset({TicketState.DONE, TicketState.DISMISSED}),
    TicketState.DONE: frozenset(),
    TicketState.DISMISSED: frozenset(),
}
DEFAULT_OUTCOME: dict[TicketState, Outcome] = {
    TicketState.DONE: "confirmed_fault",
    TicketState.DISMISSED: "false_alarm",
}
ALLOWED_OUTCOMES: dict[TicketState, frozenset[str]] = {
    TicketState.DONE: frozenset({"confirmed_fault", "no_fault_found"}),
    TicketState.DISMISSED: frozenset({"false_alarm", "no_fault_found"}),
}


class TransitionError(ValueError):
    """A transition the lifecycle does not allow (or an unknown ticket); shown to the user as is."""


class TransitionConflict(TransitionError):
    """A concurrent change of the same ticket won; nothing of this one was applied (the API answers 409)."""


def replacement_days(score: RiskScore) -> float | None:
    """Days until a battery needs replacing (the parts forecast's input): 0 when already below
    60 % (the scorer's ``days_to_failure`` is then 0), else its ``days_to_60pct`` explanation."""
    if score.component is not Component.BATTERY:
        return None
    if score.days_to_failure == 0.0:
        return 0.0
    return next((f.value for f in score.factors if f.feature == "days_to_60pct" and f.value is not None), None)


class TicketService:
    def __init__(self, store: TicketStore, settings: AlertSettings) -> None:
        self.store = store
        self.settings = settings
        self.connector_names = [c.name for c in settings.connectors]

    # --- from Kafka -----------------------------------------------------------------------------

    def apply_inventory(self, inventory: DeviceInventory, now: datetime | None = None) -> bool:
        return self.apply_inventories([inventory], now=now) == 1

    def apply_inventories(
        self, records: Sequence[DeviceInventory], not_after: datetime | None = None, now: datetime | None = None
    ) -> int:
        """Keep the newest facts per device in one transaction; an older record (replay) never wins.

        Nothing dated after ``not_after`` (the consumer passes its clock plus the skew
        tolerance) is applied, and stored facts dated after it do not block correct updates:
        a future date would otherwise outrank every later record until that date.

        Inventory and alerts travel on different topics, so an alert may open a ticket before
        its device's facts arrive: open (not yet approved) tickets get their recommendation
        re-planned whenever the facts change (warranty, device kind). A changed recommendation
        is a ``replanned`` ticket event with its audit record: what a fleet manager approves
        must not change unseen. A ticket whose incident a connector has (or is about to get)
        also gets an update for it in the outbox (scheduled at ``now``, the wall clock by
        default): the service desk works from the incident, not from fleetpulse's page.
        """
        now = now or datetime.now(UTC)
        applied = 0
        with self.store.session() as session:
            for inventory in records:
                if not_after is not None and inventory.updated_at > not_after:
                    continue
                device = session.get(Device, inventory.device_id)
                stored = device.updated_at if device is not None else None
                if stored is not None and stored >= inventory.updated_at and (not_after is None or stored <= not_after):
                    continue
                if device is None:
                    device = Device(device_id=inventory.device_id)
                    session.add(device)
                for name in ("vendor", "model", "purchase_date", "warranty_end", "site", "department", "updated_at"):
                    setattr(device, name, getattr(inventory, name))
                device.kind = inventory.kind.value
                applied += 1
                open_tickets = session.scalars(
                    select(TicketRow).where(
                        TicketRow.device_id == inventory.device_id, TicketRow.state == TicketState.OPEN.value
                    )
                )
                for ticket in open_tickets:
                    self._replan(session, ticket, inventory, now)
        return applied

    def _replan(self, session: Session, ticket: TicketRow, inventory: DeviceInventory, now: datetime) -> None:
        plan = actions.recommend(Component(ticket.component), None, inventory, ticket.opened_at.date())
        text = actions.storm_first(plan.text) if ticket.storm_group else plan.text
        ticket.co2e_avoided_kg = plan.co2e_avoided_kg
        if (plan.kind, text) == (ticket.action_kind, ticket.recommended_action):
            return
        # never before the ticket's last change, though the facts may be dated before it opened
        at = max(ticket.updated_at, inventory.updated_at)
        change = f"{ticket.action_kind} -> {plan.kind} after new device facts"
        self._event(session, ticket.id, at, "replanned", f"{change}. Was: {ticket.recommended_action} Now: {text}")
        was = ticket.recommended_action
        ticket.action_kind = plan.kind
        ticket.recommended_action = text
        ticket.updated_at = at
        session.flush()
        count = select(func.count()).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "replanned")
        update_id = f"fleetpulse-ticket-{ticket.id}-replan-{session.scalar(count)}"
        self._notify_incidents(
            session, ticket, update_id, lambda t: replan_notification(t, was, change, update_id), now
        )

    def record_score(self, score: RiskScore) -> bool:
        return self.record_scores([score]) == 1

    def record_scores(self, scores: Sequence[RiskScore]) -> int:
        """Downsampled history for the device page, one transaction per batch: at most one point
        per component per ``history_min_interval`` (a year of hourly scores would bury the store)."""
        if not scores:
            return 0
        interval = self.settings.consumer.history_min_interval
        kept = 0
        with self.store.session() as session:
            rows = session.execute(
                select(RiskPoint.device_id, RiskPoint.component, RiskPoint.component_id, func.max(RiskPoint.at))
                .where(RiskPoint.device_id.in_({s.device_id for s in scores}))
                .group_by(RiskPoint.device_id, RiskPoint.component, RiskPoint.component_id)
            ).all()
            last: dict[tuple[str, str, str], datetime] = {(d, c, i): at for d, c, i, at in rows}
            for score in sorted(scores, key=lambda s: s.collected_at):
                key = (score.device_id, score.component.value, score.component_id)
                previous = last.get(key)
                if previous is not None and score.collected_at < previous + interval:
                    continue
                session.add(
                    RiskPoint(
                        device_id=score.device_id,
                        component=score.component.value,
                        component_id=score.component_id,
                        at=score.collected_at,
                        risk=score.risk,
                        horizon_days=score.horizon_days,
                        replace_in_days=replacement_days(score),
                    )
                )
                last[key] = score.collected_at
                kept += 1
        return kept

    def prune_history(self, now: datetime) -> int:
        """Drop history older than ``history_retention`` (data minimisation; the plot needs months, not years)."""
        with self.store.session() as session:
            result = session.execute(
                delete(RiskPoint).where(RiskPoint.at < now - self.settings.consumer.history_retention)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def apply_alert(self, alert: Alert, now: datetime) -> ApplyResult:
        """Open, update or annotate the component's one open ticket; idempotent by ``alert_id``.

        Ticket times are the alert's event time (replays give the same tickets); ``now`` only
        schedules the outbox.
        """
        try:
            with self.store.session() as session:
                if session.get(AlertSeen, alert.alert_id) is not None:
                    return "duplicate"
                result, ticket_id = self._apply(session, alert, now)
                session.add(
                    AlertSeen(
                        alert_id=alert.alert_id,
                        ticket_id=ticket_id,
                        state=alert.state.value,
                        at=alert.at,
                        outcome=result,
                    )
                )
                return result
        except IntegrityError:
            # another consumer applied the same alert (or opened the same component) concurrently
            log.info("alert raced with a concurrent writer", extra={"fields": {"alert_id": alert.alert_id}})
            return "duplicate"

    def _apply(self, session: Session, alert: Alert, now: datetime) -> tuple[ApplyResult, int | None]:
        key = open_key(alert.device_id, alert.component.value, alert.component_id)
        ticket = session.scalars(select(TicketRow).where(TicketRow.open_key == key)).first()
        if alert.state is AlertState.CLEARED:
            if ticket is None:
                return "cleared_without_ticket", None
            ticket.alert_cleared_at = alert.at
            ticket.updated_at = max(ticket.updated_at, alert.at)
            self._event(
                session,
                ticket.id,
                alert.at,
                "alert_cleared",
                f"risk fell to {alert.risk:.0%} ({alert.alert_id}); ticket kept for review",
            )
            return "cleared", ticket.id
        if ticket is not None:
            self._refresh(ticket, alert)
            self._event(session, ticket.id, alert.at, "alert_raised", f"raised again at {alert.risk:.0%}")
            return "updated", ticket.id
        return "opened", self._open(session, alert, key, now)

    @staticmethod
    def _refresh(ticket: TicketRow, alert: Alert) -> None:
        urgency = actions.urgency(alert.risk, alert.days_to_failure, alert.days_to_failure_low)
        ticket.risk = alert.risk
        ticket.urgency = urgency
        ticket.urgency_rank = actions.URGENCY_RANK[urgency]
        ticket.days_to_failure = alert.days_to_failure
        ticket.days_to_failure_low = alert.days_to_failure_low
        ticket.days_to_failure_high = alert.days_to_failure_high
        ticket.model_name = alert.model_name
        ticket.model_version = alert.model_version
        ticket.evidence = [f.model_dump(mode="json") for f in alert.factors]
        ticket.last_alert_id = alert.alert_id
        ticket.alert_cleared_at = None
        ticket.updated_at = max(ticket.updated_at, alert.at)

    def _open(self, session: Session, alert: Alert, key: str, now: datetime) -> int:
        device = session.get(Device, alert.device_id)
        inventory = inventory_of(device)
        plan = actions.recommend(alert.component, None, inventory, alert.at.date())
        urgency = actions.urgency(alert.risk, alert.days_to_failure, alert.days_to_failure_low)
        ticket = TicketRow(
            device_id=alert.device_id,
            component=alert.component.value,
            component_id=alert.component_id,
            open_key=key,
            state=TicketState.OPEN.value,
            urgency=urgency,
            urgency_rank=actions.URGENCY_RANK[urgency],
            risk=alert.risk,
            days_to_failure=alert.days_to_failure,
            days_to_failure_low=alert.days_to_failure_low,
            days_to_failure_high=alert.days_to_failure_high,
            model_name=alert.model_name,
            model_version=alert.model_version,
            evidence=[f.model_dump(mode="json") for f in alert.factors],
            action_kind=plan.kind,
            recommended_action=plan.text,
            co2e_avoided_kg=plan.co2e_avoided_kg,
            storm_key=storm.storm_key(alert, device.model if device else None)[:400],
            last_alert_id=alert.alert_id,
            opened_at=alert.at,
            updated_at=alert.at,
        )
        session.add(ticket)
        session.flush()
        self._event(session, ticket.id, alert.at, "opened", f"alert {alert.alert_id} at {alert.risk:.0%}", to="open")
        group = self._storm(session, ticket, alert, now)
        if group is None:
            view = TicketStore._view(ticket, device)
            note = ticket_notification(view.to_contract())
            for name in self.connector_names:
                self._enqueue(session, name, note.dedup_key, "ticket", note.model_dump(mode="json"), now)
        return ticket.id

    def _storm(self, session: Session, ticket: TicketRow, alert: Alert, now: datetime) -> StormGroup | None:
        """Join a running storm of this key, or start one when this raise reaches the threshold."""
        policy = self.settings.storm
        cut = alert.at - policy.window
        group = session.scalars(
            select(StormGroup)
            .where(StormGroup.storm_key == ticket.storm_key, StormGroup.last_at > cut)
            .order_by(StormGroup.last_at.desc())
            .limit(1)
        ).first()
        if group is None and alert.storm_group:
            group = session.get(StormGroup, alert.storm_group)
        if group is None:
            recent = list(
                session.scalars(
                    select(TicketRow).where(
                        TicketRow.storm_key == ticket.storm_key,
                        TicketRow.storm_group.is_(None),
                        TicketRow.opened_at > cut,
                        TicketRow.opened_at <= alert.at,
                        TicketRow.id != ticket.id,
                    )
                )
            )
            if not alert.storm_group and not storm.is_storm(policy, alert.at, [t.opened_at for t in recent]):
                return None
            component, cause, device_model = ticket.storm_key.split("|", 2)
            first_at = min([t.opened_at for t in recent] + [alert.at])
            group = StormGroup(
                group_id=alert.storm_group or storm.group_id(ticket.storm_key, first_at),
                storm_key=ticket.storm_key,
                component=component,
                cause=cause,
                device_model=device_model,
                first_at=first_at,
                last_at=alert.at,
                member_count=0,
            )
            session.add(group)
            session.flush()
            for member in recent:
                self._join(session, group, member, alert.at)
            self._join(session, group, ticket, alert.at)
            summary = StormSummary(
                group_id=group.group_id,
                component=component,
                cause=cause,
                device_model=device_model,
                first_at=first_at,
                member_count=group.member_count,
                sample_devices=sorted({t.device_id for t in [*recent, ticket]})[:20],
            )
            note = storm_notification(summary)
            for name in self.connector_names:
                self._enqueue(session, name, note.dedup_key, "storm", note.model_dump(mode="json"), now)
            log.warning(
                "alert storm detected",
                extra={"fields": {"group": group.group_id, "key": group.storm_key, "members": group.member_count}},
            )
            return group
        self._join(session, group, ticket, alert.at)
        return group

    def _join(self, session: Session, group: StormGroup, ticket: TicketRow, at: datetime) -> None:
        ticket.storm_group = group.group_id
        ticket.recommended_action = actions.storm_first(ticket.recommended_action)
        group.member_count += 1
        group.last_at = max(group.last_at, at)
        self._event(session, ticket.id, at, "storm_grouped", f"grouped into fleet-wide problem {group.group_id}")

    # --- from people -----------------------------------------------------------------------------

    def transition(
        self,
        ticket_ids: Sequence[int],
        to: TicketState,
        actor: str,
        now: datetime,
        note: str = "",
        outcome: Outcome | None = None,
        context: AuditContext | None = None,
    ) -> list[TicketView]:
        """Move tickets to ``to`` (all or none); closing ones publishes their outcome as a training label.

        ``context`` is the identity, request id and source address the audit trail records;
        without it ``actor`` is recorded as a local account. Several tickets at once are
        also recorded as one bulk action naming them all.
        """
        context = context or AuditContext(AuditActor.local(actor))
        if to in ALLOWED_OUTCOMES:
            outcome = outcome or DEFAULT_OUTCOME[to]
            if outcome not in ALLOWED_OUTCOMES[to]:
                raise TransitionError(f"outcome {outcome!r} does not fit state {to.value!r}")
        elif outcome is not None:
            raise TransitionError(f"an outcome is recorded only when a ticket is done or dismissed, not {to.value!r}")
        try:
            self._transition(ticket_ids, to, actor, now, note, outcome, context)
        except IntegrityError:
            # a write the row locks did not serialise (e.g. the closing label's outbox row) raced another change
            raise TransitionConflict("the ticket was changed at the same time; reload it and try again") from None
        views = [self.store.get_ticket(i) for i in ticket_ids]
        return [v for v in views if v is not None]

    def _transition(
        self,
        ticket_ids: Sequence[int],
        to: TicketState,
        actor: str,
        now: datetime,
        note: str,
        outcome: Outcome | None,
        context: AuditContext,
    ) -> None:
        with self.store.session() as session:
            tickets = self._locked(session, ticket_ids)
            if len(ticket_ids) > 1:
                bulk = {"tickets": list(ticket_ids), "to": to.value, "outcome": outcome, "note": note}
                stage(session, AuditKind.BULK_ACTION, context, bulk)
            for ticket_id in ticket_ids:
                ticket = tickets.get(ticket_id)
                if ticket is None:
                    raise TransitionError(f"ticket {ticket_id} not found")
                current = TicketState(ticket.state)
                if to not in TRANSITIONS[current]:
                    raise TransitionError(f"ticket {ticket_id}: cannot go from {current.value!r} to {to.value!r}")
                ticket.state = to.value
                ticket.updated_at = now
                if ticket.state not in OPEN_STATES:
                    ticket.open_key = None
                text = note if outcome is None else f"outcome: {outcome}. {note}".strip()
                self._event(
                    session,
                    ticket.id,
                    now,
                    "transition",
                    text,
                    actor=actor,
                    frm=current.value,
                    to=to.value,
                    context=context,
                )
                if outcome is not None:
                    ticket.outcome = outcome
                    label = TicketOutcome(
                        ticket_id=ticket.id,
                        device_id=ticket.device_id,
                        component=Component(ticket.component),
                        component_id=ticket.component_id,
                        outcome=outcome,
                        model_version=ticket.model_version,
                        recorded_at=now,
                        recorded_by=actor[:128],
                    )
                    payload = label.model_dump(mode="json")
                    self._enqueue(session, LABELS_TARGET, f"outcome-{ticket.id}", "outcome", payload, now)
                self._notify_update(session, ticket, current.value, actor, note, outcome, now)

    @staticmethod
    def _locked(session: Session, ticket_ids: Sequence[int]) -> dict[int, TicketRow]:
        """The tickets to move, locked until commit: a concurrent transition of one of them waits, then
        reads its new state and is refused, instead of both passing the lifecycle check.

        PostgreSQL locks the rows (``FOR UPDATE``, in id order, so two bulk moves cannot deadlock);
        SQLite ignores ``FOR UPDATE`` and reads outside any lock, so there a no-op UPDATE first takes
        the database's write lock.
        """
        ids = sorted(set(ticket_ids))
        if session.get_bind().dialect.name == "sqlite":
            session.execute(
                update(TicketRow)
                .where(TicketRow.id.in_(ids))
                .values(state=TicketRow.state)
                .execution_options(synchronize_session=False)
            )
        rows = session.scalars(select(TicketRow).where(TicketRow.id.in_(ids)).order_by(TicketRow.id).with_for_update())
        return {row.id: row for row in rows}

    def _notify_update(
        self,
        session: Session,
        ticket: TicketRow,
        from_state: str,
        actor: str,
        note: str,
        outcome: str | None,
        now: datetime,
    ) -> None:
        """Tell each connector that has this ticket's incident of the lifecycle change."""
        update_id = f"fleetpulse-ticket-{ticket.id}-{ticket.state}"
        self._notify_incidents(
            session,
            ticket,
            update_id,
            lambda t: update_notification(t, from_state, actor, note, outcome, update_id),
            now,
        )

    def _notify_incidents(
        self,
        session: Session,
        ticket: TicketRow,
        update_id: str,
        render: Callable[[Ticket], Notification],
        now: datetime,
    ) -> None:
        """Queue ``render``'s update, as outbox row ``update_id``, for each configured connector that has
        (or is still to get) this ticket's incident; storm members have none of their own."""
        key = f"fleetpulse-ticket-{ticket.id}"
        targets = session.scalars(
            select(OutboxRow.target).where(OutboxRow.dedup_key == key, OutboxRow.subject == "ticket")
        ).all()
        if not targets:
            return
        session.flush()
        view = TicketStore._view(ticket, session.get(Device, ticket.device_id))
        payload = render(view.to_contract()).model_dump(mode="json")
        for target in targets:
            if target in self.connector_names:
                self._enqueue(session, target, update_id, "update", payload, now)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _event(
        session: Session,
        ticket_id: int,
        at: datetime,
        kind: str,
        note: str,
        actor: str = SYSTEM_ACTOR,
        frm: str | None = None,
        to: str | None = None,
        context: AuditContext = SYSTEM_CONTEXT,
    ) -> None:
        session.add(
            TicketEvent(ticket_id=ticket_id, at=at, actor=actor, kind=kind, from_state=frm, to_state=to, note=note)
        )
        payload = {"ticket_id": ticket_id, "event_at": at.isoformat(), "from": frm, "to": to, "note": note}
        stage(session, ticket_kind(kind), context, payload)

    @staticmethod
    def _enqueue(
        session: Session, target: str, dedup_key: str, subject: str, payload: dict[str, Any], now: datetime
    ) -> None:
        session.add(
            OutboxRow(
                target=target,
                dedup_key=dedup_key,
                subject=subject,
                payload=payload,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )

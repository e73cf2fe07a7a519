"""Reads and writes of the ticket store, returning plain pydantic views (never live ORM rows).

The alert-to-ticket rules live in :mod:`fleetpulse.alerts.tickets`; this module only knows tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import Engine, Select, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from fleetpulse.alerts.store import make_engine, upgrade
from fleetpulse.alerts.store.audit import (
    AuditKind,
    AuditLog,
    append_staged,
    discard_staged,
    stage,
)
from fleetpulse.alerts.store.models import Device, OutboxRow, RiskPoint, StormGroup, TicketEvent, TicketRow
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import Component, DeviceInventory, DeviceKind, Factor, Ticket, TicketState

OPEN_STATES = (TicketState.OPEN.value, TicketState.APPROVED.value, TicketState.ORDERED.value)


def open_key(device_id: str, component: str, component_id: str) -> str:
    return f"{device_id}|{component}|{component_id}"


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class TicketView(_View):
    id: int
    device_id: str
    component: Component
    component_id: str
    state: TicketState
    urgency: str
    risk: float
    days_to_failure: float | None
    days_to_failure_low: float | None
    days_to_failure_high: float | None
    model_name: str
    model_version: str
    evidence: list[Factor]
    action_kind: str
    recommended_action: str
    co2e_avoided_kg: float
    storm_group: str | None
    alert_cleared_at: datetime | None
    opened_at: datetime
    updated_at: datetime
    site: str | None = None
    department: str | None = None
    device_model: str | None = None
    device_kind: DeviceKind | None = None
    warranty_end: date | None = None

    def to_contract(self) -> Ticket:
        return Ticket.model_validate({"ticket_id": self.id, **self.model_dump(include=_CONTRACT_FIELDS)})


_CONTRACT_FIELDS = set(Ticket.model_fields) - {"ticket_id", "schema_version"}


class EventView(_View):
    id: int
    ticket_id: int
    at: datetime
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    note: str


class OpenTicket(_View):
    """What the demo compares with the simulator's ground truth."""

    ticket_id: int
    device_id: str
    component: Component
    component_id: str
    opened_at: datetime


class TicketCount(_View):
    component: str
    state: str
    outcome: str
    site: str
    count: int


NEEDS_ATTENTION = "needs attention: "
EXTERNAL_ID_CHARS = 64


class Incident(NamedTuple):
    """An incident a target took, as an update of it needs it."""

    reference: str | None
    """What the target returned (an incident number, a mail's Message-ID); None until delivered."""
    record_id: str | None
    """The target's own id of the incident (ServiceNow's sys_id), where the connector returned one."""
    title: str


class OutboxView(_View):
    id: int
    target: str
    dedup_key: str
    subject: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    external_ref: str | None
    last_error: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def needs_attention(self) -> bool:
        """The last attempt failed in a way retrying cannot fix (login rejected, 4xx): an admin must act."""
        return self.last_error is not None and self.last_error.startswith(NEEDS_ATTENTION)


class OutboxBacklog(BaseModel):
    """Undelivered outbox rows of one target: the operator's view of "is delivery keeping up"."""

    target: str
    pending: int
    needs_attention: int
    oldest_created_at: datetime


class SiteCoverage(BaseModel):
    """Devices of one site in the inventory, and those whose daily inventory has stopped arriving."""

    site: str
    devices: int
    silent: int


class SilentDevice(BaseModel):
    device_id: str
    site: str
    device_model: str
    last_inventory_at: datetime


class StormView(_View):
    group_id: str
    component: str
    cause: str
    device_model: str
    first_at: datetime
    last_at: datetime
    member_count: int


class HistoryPoint(_View):
    component: str
    component_id: str
    at: datetime
    risk: float


class TicketFilter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    states: tuple[TicketState, ...] = ()
    site: str | None = None
    department: str | None = None
    component: Component | None = None
    device_model: str | None = None
    device_id: str | None = None
    storm_group: str | None = None
    in_sites: frozenset[str] | None = None
    """The caller's scope: only devices at these sites (None = every site, and devices without inventory)."""
    in_departments: frozenset[str] | None = None
    """The caller's scope narrowed to these departments (None = every department)."""


def inventory_of(device: Device | None) -> DeviceInventory | None:
    if device is None:
        return None
    return DeviceInventory(
        device_id=device.device_id,
        kind=DeviceKind(device.kind),
        vendor=device.vendor,
        model=device.model,
        purchase_date=device.purchase_date,
        warranty_end=device.warranty_end,
        site=device.site,
        department=device.department,
        updated_at=device.updated_at,
    )


class TicketStore:
    """Owns the engine and hands out sessions; created once per process from ``store_url``.

    Audit records staged in a session (:func:`fleetpulse.alerts.store.audit.stage`) are
    appended to the trail when that session commits, in the same transaction.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "before_commit", lambda session: append_staged(session, self.clock()))
        event.listen(self._sessions, "after_rollback", discard_staged)
        self.audit = AuditLog(engine, self.session, lambda: self.clock())

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> TicketStore:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    # --- tickets -----------------------------------------------------------------------------

    def _ticket_query(self, flt: TicketFilter) -> Select[TicketRow, Device]:
        query = select(TicketRow, Device).join(Device, Device.device_id == TicketRow.device_id, isouter=True)
        if flt.states:
            query = query.where(TicketRow.state.in_([s.value for s in flt.states]))
        if flt.component is not None:
            query = query.where(TicketRow.component == flt.component.value)
        if flt.device_id is not None:
            query = query.where(TicketRow.device_id == flt.device_id)
        if flt.storm_group is not None:
            query = query.where(TicketRow.storm_group == flt.storm_group)
        if flt.site is not None:
            query = query.where(Device.site == flt.site)
        if flt.department is not None:
            query = query.where(Device.department == flt.department)
        if flt.device_model is not None:
            query = query.where(Device.model == flt.device_model)
        if flt.in_sites is not None:
            query = query.where(Device.site.in_(sorted(flt.in_sites)))
        if flt.in_departments is not None:
            query = query.where(Device.department.in_(sorted(flt.in_departments)))
        return query

    @staticmethod
    def _view(row: TicketRow, device: Device | None) -> TicketView:
        data = {c: getattr(row, c) for c in TicketView.model_fields if hasattr(row, c)}
        if device is not None:
            data |= {
                "site": device.site,
                "department": device.department,
                "device_model": device.model,
                "device_kind": device.kind,
                "warranty_end": device.warranty_end,
            }
        return TicketView.model_validate(data)

    def _queue_query(self, flt: TicketFilter) -> Select[TicketRow, Device]:
        """Most urgent first: urgency, then still-alerting before cleared, then risk, then the oldest ticket."""
        return self._ticket_query(flt).order_by(
            TicketRow.urgency_rank.desc(),
            TicketRow.alert_cleared_at.is_not(None),  # still alerting before cleared since
            TicketRow.risk.desc(),
            TicketRow.opened_at,
            TicketRow.id,
        )

    def list_tickets(self, flt: TicketFilter = TicketFilter(), limit: int = 500, offset: int = 0) -> list[TicketView]:
        """One page of the queue, in :meth:`_queue_query`'s order."""
        query = self._queue_query(flt).limit(limit).offset(offset)
        with self.session() as session:
            return [self._view(row, device) for row, device in session.execute(query).all()]

    @contextmanager
    def stream_tickets(
        self, flt: TicketFilter = TicketFilter(), limit: int | None = None, chunk: int = 1000
    ) -> Iterator[Iterator[TicketView]]:
        """The whole queue in :meth:`list_tickets`' order, fetched ``chunk`` rows at a time, for exports:
        memory stays flat for any number of tickets (a server-side cursor on PostgreSQL).

        The session and its pooled connection are held until the ``with`` block ends: leave it before
        handing anything to a client that may read slowly.
        """
        query = self._queue_query(flt).limit(limit).execution_options(yield_per=chunk)
        with self.session() as session:
            yield (self._view(row, device) for row, device in session.execute(query))

    def storm_groups_of(self, flt: TicketFilter) -> set[str]:
        """The storm groups of the filtered tickets, read as such (not the tickets: any number of them)."""
        query = (
            self._ticket_query(flt)
            .with_only_columns(TicketRow.storm_group)
            .where(TicketRow.storm_group.is_not(None))
            .distinct()
        )
        with self.session() as session:
            return {group for group in session.scalars(query) if group is not None}

    def count_tickets(self, flt: TicketFilter = TicketFilter()) -> int:
        query = select(func.count()).select_from(self._ticket_query(flt).subquery())
        with self.session() as session:
            return int(session.execute(query).scalar_one())

    def get_ticket(self, ticket_id: int) -> TicketView | None:
        query = self._ticket_query(TicketFilter()).where(TicketRow.id == ticket_id)
        with self.session() as session:
            found = session.execute(query).first()
            return None if found is None else self._view(found[0], found[1])

    def ticket_events(self, ticket_id: int) -> list[EventView]:
        query = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
        with self.session() as session:
            return [EventView.model_validate(e) for e in session.scalars(query)]

    def open_tickets(self) -> list[OpenTicket]:
        query = select(TicketRow).where(TicketRow.state.in_(OPEN_STATES)).order_by(TicketRow.id)
        with self.session() as session:
            return [
                OpenTicket(
                    ticket_id=t.id,
                    device_id=t.device_id,
                    component=Component(t.component),
                    component_id=t.component_id,
                    opened_at=t.opened_at,
                )
                for t in session.scalars(query)
            ]

    def ticket_counts(self) -> list[TicketCount]:
        """Tickets per (component, state, outcome, site): the dashboards' periodic ``ticket`` snapshot."""
        query = (
            select(TicketRow.component, TicketRow.state, TicketRow.outcome, Device.site, func.count(TicketRow.id))
            .outerjoin(Device, Device.device_id == TicketRow.device_id)
            .group_by(TicketRow.component, TicketRow.state, TicketRow.outcome, Device.site)
        )
        with self.session() as session:
            return [
                TicketCount(
                    component=component,
                    state=state,
                    outcome=outcome or "pending",
                    site=site or "unknown",
                    count=count,
                )
                for component, state, outcome, site, count in session.execute(query)
            ]

    def site_coverage(self, silent_before: datetime) -> list[SiteCoverage]:
        """Per site: inventoried devices, and those whose last inventory is older than ``silent_before``."""
        silent = func.count().filter(Device.updated_at < silent_before)
        query = select(Device.site, func.count(), silent).group_by(Device.site).order_by(Device.site)
        with self.session() as session:
            return [
                SiteCoverage(site=site or "unknown", devices=devices, silent=quiet)
                for site, devices, quiet in session.execute(query)
            ]

    def silent_devices(self, silent_before: datetime, limit: int = 20_000) -> list[SilentDevice]:
        """Devices whose last inventory is older than ``silent_before``, longest silent first."""
        query = (
            select(Device.device_id, Device.site, Device.model, Device.updated_at)
            .where(Device.updated_at < silent_before)
            .order_by(Device.updated_at, Device.device_id)
            .limit(limit)
        )
        with self.session() as session:
            return [
                SilentDevice(device_id=d, site=site or "unknown", device_model=model or "unknown", last_inventory_at=at)
                for d, site, model, at in session.execute(query)
            ]

    def facets(self, flt: TicketFilter = TicketFilter()) -> dict[str, list[str]]:
        """Distinct sites, departments and models of the devices with tickets ``flt`` selects: pass a
        caller's scope and the page names no site, department or hardware model outside it."""
        columns = self._ticket_query(flt).with_only_columns(Device.site, Device.department, Device.model).distinct()
        sites: set[str] = set()
        departments: set[str] = set()
        models: set[str] = set()
        with self.session() as session:
            for site, department, model in session.execute(columns):
                sites.add(site or "")
                departments.add(department or "")
                models.add(model or "")
        return {
            name: sorted(v for v in values if v)
            for name, values in (("site", sites), ("department", departments), ("model", models))
        }

    # --- devices -----------------------------------------------------------------------------

    def get_device(self, device_id: str) -> DeviceInventory | None:
        with self.session() as session:
            return inventory_of(session.get(Device, device_id))

    def history(self, device_id: str, since: datetime | None = None, limit: int = 5000) -> list[HistoryPoint]:
        query = select(RiskPoint).where(RiskPoint.device_id == device_id)
        if since is not None:
            query = query.where(RiskPoint.at >= since)
        query = query.order_by(RiskPoint.at.desc()).limit(limit)
        with self.session() as session:
            points = [HistoryPoint.model_validate(p) for p in session.scalars(query)]
        return points[::-1]

    # --- storms and outbox ---------------------------------------------------------------------

    def storms(self) -> list[StormView]:
        with self.session() as session:
            query = select(StormGroup).order_by(StormGroup.last_at.desc())
            return [StormView.model_validate(g) for g in session.scalars(query)]

    def outbox(self, pending_only: bool = False, limit: int = 500) -> list[OutboxView]:
        query = select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit)
        if pending_only:
            query = query.where(OutboxRow.delivered_at.is_(None))
        with self.session() as session:
            return [OutboxView.model_validate(r) for r in session.scalars(query)]

    def outbox_backlog(self) -> list[OutboxBacklog]:
        """Per target: undelivered rows, those waiting for an administrator, and when the oldest was queued."""
        attention = OutboxRow.last_error.startswith(NEEDS_ATTENTION)
        query = (
            select(
                OutboxRow.target,
                func.count(),
                func.count().filter(attention),
                func.min(OutboxRow.created_at),
            )
            .where(OutboxRow.delivered_at.is_(None))
            .group_by(OutboxRow.target)
            .order_by(OutboxRow.target)
        )
        with self.session() as session:
            return [
                OutboxBacklog(target=target, pending=pending, needs_attention=waiting, oldest_created_at=oldest)
                for target, pending, waiting, oldest in session.execute(query)
            ]

    def due_outbox(self, now: datetime, limit: int, targets: Sequence[str]) -> list[OutboxView]:
        query = (
            select(OutboxRow)
            .where(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at <= now, OutboxRow.target.in_(targets))
            .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
            .limit(limit)
        )
        with self.session() as session:
            return [OutboxView.model_validate(r) for r in session.scalars(query)]

    def incident_of(self, target: str, dedup_key: str) -> Incident | None:
        """What ``target`` returned for the incident ``dedup_key`` (None until delivered) and its title, for
        an update that must name it; None when the target was never sent that incident."""
        query = select(OutboxRow).where(
            OutboxRow.target == target, OutboxRow.dedup_key == dedup_key, OutboxRow.subject.in_(("ticket", "storm"))
        )
        with self.session() as session:
            row = session.scalars(query).first()
            if row is None:
                return None
            title = row.payload.get("title") if isinstance(row.payload, dict) else None
            return Incident(row.external_ref, row.external_id, title if isinstance(title, str) else "")

    def mark_delivered(
        self, outbox_id: int, now: datetime, external_ref: str | None, external_id: str | None = None
    ) -> None:
        """The target confirmed the row; the delivery is recorded in the audit trail with it.

        ``external_id`` is kept only whole: a cut id would address another record."""
        with self.session() as session:
            row = session.get_one(OutboxRow, outbox_id)
            row.attempts += 1
            row.delivered_at = now
            row.external_ref = external_ref[:200] if external_ref else None
            row.external_id = external_id if external_id and len(external_id) <= EXTERNAL_ID_CHARS else None
            row.last_error = None
            stage(session, AuditKind.DELIVERED, payload=_delivery(row))

    def record_incident_id(self, target: str, dedup_key: str, external_id: str) -> bool:
        """Keep the id an update found ``target``'s incident ``dedup_key`` under (the stored one answered 404,
        or none was stored) on the incident's own row, so later updates address it without the lookup.

        Whether a row took it; an id too long to keep whole is not kept, as in :meth:`mark_delivered`."""
        if not external_id or len(external_id) > EXTERNAL_ID_CHARS:
            return False
        with self.session() as session:
            result = session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.target == target,
                    OutboxRow.dedup_key == dedup_key,
                    OutboxRow.subject.in_(("ticket", "storm")),
                )
                .values(external_id=external_id)
            )
            return bool(getattr(result, "rowcount", 0))

    def mark_failed(self, outbox_id: int, error: str, next_attempt_at: datetime) -> int:
        """A failed attempt (``needs attention: …`` when retrying cannot fix it), audited with the reason."""
        with self.session() as session:
            row = session.get_one(OutboxRow, outbox_id)
            row.attempts += 1
            row.last_error = error[:2000]
            row.next_attempt_at = next_attempt_at
            attention = row.last_error.startswith(NEEDS_ATTENTION)
            kind = AuditKind.DELIVERY_NEEDS_ATTENTION if attention else AuditKind.DELIVERY_FAILED
            stage(session, kind, payload=_delivery(row) | {"next_attempt_at": next_attempt_at.isoformat()})
            return row.attempts

    def defer_target(self, target: str, until: datetime) -> int:
        """Postpone every pending row of a target that is down to ``until`` (attempts unchanged)."""
        with self.session() as session:
            result = session.execute(
                update(OutboxRow)
                .where(OutboxRow.target == target, OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at < until)
                .values(next_attempt_at=until)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def retry_now(self, now: datetime, ids: Sequence[int] | None = None) -> int:
        """Make pending rows due immediately (an admin's 'the ITSM is back, push now'): the pending rows
        among ``ids``, or every pending row when ``ids`` is None. An empty list names no row: it never
        means all, so a client that filtered its selection down to nothing sends nothing out."""
        with self.session() as session:
            query = select(OutboxRow).where(OutboxRow.delivered_at.is_(None))
            if ids is not None:
                query = query.where(OutboxRow.id.in_(ids))
            rows = list(session.scalars(query))
            for row in rows:
                row.next_attempt_at = now
            return len(rows)


def _delivery(row: OutboxRow) -> dict[str, Any]:
    """What an auditor needs of a connector delivery: which message went where, and how it ended."""
    return {
        "outbox_id": row.id,
        "target": row.target,
        "subject": row.subject,
        "dedup_key": row.dedup_key,
        "attempts": row.attempts,
        "external_ref": row.external_ref,
        "error": row.last_error,
    }


def open_tickets(store_url: str) -> list[OpenTicket]:
    """Open, approved or ordered tickets of the store at ``store_url`` (the demo's comparison with ground truth)."""
    store = TicketStore.open(store_url)
    try:
        return store.open_tickets()
    finally:
        store.close()

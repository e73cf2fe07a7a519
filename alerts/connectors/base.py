"""What every ITSM connector receives and must do: deliver one :class:`Notification`.

Notifications are rendered when the ticket opens and stored in the outbox, so a connector
that is down for a day later sends exactly what would have been sent at the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from fleetpulse.contract.v1 import Ticket
from fleetpulse.retry import PermanentError


class DeliveryError(RuntimeError):
    """The target refused or could not be reached; the outbox retries later."""


class PermanentDeliveryError(DeliveryError, PermanentError):
    """The target rejected the request itself (4xx, failed login, untrusted certificate):
    retrying cannot fix it, an administrator must. ``whole_target``: every message to this
    target would fail the same way (credentials, TLS), not only this one.
    """

    def __init__(self, message: str, whole_target: bool) -> None:
        super().__init__(message)
        self.whole_target = whole_target


class StormSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str
    component: str
    cause: str
    device_model: str
    first_at: datetime
    member_count: int
    sample_devices: list[str]


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: Literal["ticket", "storm", "update"]
    dedup_key: str
    title: str
    body: str
    urgency: Literal["low", "medium", "high", "critical"]
    ticket: Ticket | None = None
    storm: StormSummary | None = None
    update_id: str | None = None
    """Names one update across retries: connectors that can read the incident back skip a note carrying it."""
    first_reference: str | None = None
    """Set by the outbox for an update: what this target returned when it took the incident (mail: its Message-ID)."""
    first_title: str | None = None
    """Set by the outbox for an update: the incident's title when it was created (a follow-up mail's subject)."""
    first_record_id: str | None = None
    """Set by the outbox for an update: the target's own id of the incident (ServiceNow's sys_id, TOPdesk's
    UUID), so the update addresses it without a lookup; None for incidents delivered before it was stored."""

    def marker(self) -> str:
        """The line an update note carries so a retry finds it; empty for updates rendered before it existed."""
        return f"[{UPDATE_MARKER}{self.update_id}]" if self.update_id else ""

    def note_text(self) -> str:
        """An update as one note on the incident: title, body and the retry marker."""
        return "\n".join(x for x in (self.title, self.body, self.marker()) if x)


UPDATE_MARKER = "fleetpulse update "
"""Bracketed with the id, so one id never matches inside a longer one (``-replan-1`` in ``-replan-10``)."""
FOLLOW_UP_FIELDS = frozenset({"update_id", "first_reference", "first_title", "first_record_id"})


@dataclass(frozen=True)
class Receipt:
    """What a target answered for a new incident when updates need more than the reference people see:
    ``record_id`` is its own id of the incident (ServiceNow's sys_id, TOPdesk's UUID), stored for the
    updates. An update returns one when it found the incident under another id than it was handed
    (by the lookup), so the outbox keeps that id for the next updates."""

    reference: str | None
    record_id: str | None = None


class Connector(Protocol):
    name: str

    def deliver(self, notification: Notification) -> str | Receipt | None:
        """Create the incident; return the target's reference (e.g. its incident number), or a
        :class:`Receipt` with its record id too. Raise DeliveryError."""


def _days(ticket: Ticket) -> str:
    if ticket.days_to_failure is None:
        return "unknown"
    if ticket.days_to_failure_low is not None and ticket.days_to_failure_high is not None:
        return f"about {ticket.days_to_failure:.0f} days ({ticket.days_to_failure_low:.0f}-{ticket.days_to_failure_high:.0f})"
    return f"about {ticket.days_to_failure:.0f} days"


def ticket_notification(ticket: Ticket) -> Notification:
    where = ", ".join(x for x in (ticket.site, ticket.department) if x) or "unknown site"
    part = f"{ticket.component.value}{f' {ticket.component_id}' if ticket.component_id else ''}"
    lines = [
        f"Device {ticket.device_id} ({ticket.device_model or 'unknown model'}, {where})",
        f"Component: {part}",
        f"Failure risk: {ticket.risk:.0%}; predicted time to failure: {_days(ticket)}",
        f"Urgency: {ticket.urgency}",
        f"Recommended action: {ticket.recommended_action}",
        f"Estimated CO2e avoided by this action: {ticket.co2e_avoided_kg:.0f} kg",
        f"Warranty until: {ticket.warranty_end or 'unknown'}",
        f"Model version: {ticket.model_version}",
        "Evidence:",
        *[f"- {f.text}" for f in ticket.evidence],
    ]
    return Notification(
        subject="ticket",
        dedup_key=f"fleetpulse-ticket-{ticket.ticket_id}",
        title=f"[fleetpulse] {ticket.urgency}: {part} of {ticket.device_id} likely to fail",
        body="\n".join(lines),
        urgency=ticket.urgency,
        ticket=ticket,
    )


def storm_notification(storm: StormSummary) -> Notification:
    lines = [
        f"{storm.member_count} devices of model {storm.device_model} raised {storm.component} alerts "
        f"with the same main signal ({storm.cause}) since {storm.first_at:%Y-%m-%d %H:%M} UTC.",
        "This looks like one fleet-wide cause (firmware, driver, batch or model issue), not independent failures;",
        "the device tickets are grouped under this problem in fleetpulse.",
        "Sample devices: " + ", ".join(storm.sample_devices),
    ]
    return Notification(
        subject="storm",
        dedup_key=f"fleetpulse-{storm.group_id}",
        title=f"[fleetpulse] problem: {storm.component} alerts on {storm.member_count}+ {storm.device_model} devices",
        body="\n".join(lines),
        urgency="high",
        storm=storm,
    )


def update_notification(
    ticket: Ticket, from_state: str, actor: str, note: str, outcome: str | None, update_id: str | None = None
) -> Notification:
    """A lifecycle change of a ticket the ITSM already has; ``dedup_key`` names that incident."""
    lines = [
        f"fleetpulse ticket {ticket.ticket_id} ({ticket.component.value} of {ticket.device_id}) "
        f"moved from {from_state} to {ticket.state.value} by {actor} at {ticket.updated_at:%Y-%m-%d %H:%M} UTC.",
    ]
    if outcome:
        lines.append(f"Outcome: {outcome.replace('_', ' ')}.")
    if note:
        lines.append(f"Note: {note}")
    return Notification(
        subject="update",
        dedup_key=f"fleetpulse-ticket-{ticket.ticket_id}",
        title=f"[fleetpulse] ticket {ticket.ticket_id} {ticket.state.value}",
        body="\n".join(lines),
        urgency=ticket.urgency,
        ticket=ticket,
        update_id=update_id,
    )


def replan_notification(ticket: Ticket, was: str, change: str, update_id: str) -> Notification:
    """New device facts changed the recommended action of a ticket the ITSM already has: the service
    desk must stop working from the old one (a new laptop where a battery now does)."""
    lines = [
        f"fleetpulse ticket {ticket.ticket_id} ({ticket.component.value} of {ticket.device_id}) was re-planned "
        f"at {ticket.updated_at:%Y-%m-%d %H:%M} UTC after new device facts ({change}).",
        f"Recommended action now: {ticket.recommended_action}",
        f"Previously recommended: {was}",
        f"Estimated CO2e avoided by this action: {ticket.co2e_avoided_kg:.0f} kg",
        f"Warranty until: {ticket.warranty_end or 'unknown'}",
    ]
    return Notification(
        subject="update",
        dedup_key=f"fleetpulse-ticket-{ticket.ticket_id}",
        title=f"[fleetpulse] ticket {ticket.ticket_id} re-planned: {ticket.recommended_action}"[:200],
        body="\n".join(lines),
        urgency=ticket.urgency,
        ticket=ticket,
        update_id=update_id,
    )

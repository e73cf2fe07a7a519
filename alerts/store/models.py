"""Ticket store schema (SQLAlchemy 2). Changes go through an alembic migration in ``migrations/versions``.

Invariants the database itself enforces, so they hold with several consumers or API workers:
- ``alerts_seen.alert_id`` is the primary key: a replayed alert is recognised, never applied twice;
- ``tickets.open_key`` is unique and set only while a ticket is open, approved or ordered:
  one open ticket per device + component + component_id;
- ``outbox (target, dedup_key)`` is unique: a ticket is handed to each connector once;
- ``audit_log.seq`` is the primary key and every append locks the one ``audit_head`` row:
  the hash chain has one order, whatever the number of writers; triggers refuse UPDATE
  and DELETE of audit records (DELETE only for ``fleetpulse audit prune``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from fleetpulse.compat import UTC


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive text; we re-attach UTC on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused by the ticket store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Device(Base):
    """Latest inventory facts per device (from the compacted inventory topic)."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    vendor: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    purchase_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date)
    site: Mapped[str | None] = mapped_column(String(128))
    department: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime]


class StormGroup(Base):
    __tablename__ = "storm_groups"

    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The alert's ``storm_group`` (contract ``ShortText``: up to 128 characters) or one derived here."""
    storm_key: Mapped[str] = mapped_column(String(400), index=True)
    component: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(128))
    device_model: Mapped[str] = mapped_column(String(128))
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    member_count: Mapped[int] = mapped_column(Integer, default=0)


class TicketRow(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    component: Mapped[str] = mapped_column(String(16))
    component_id: Mapped[str] = mapped_column(String(128), default="")
    open_key: Mapped[str | None] = mapped_column(String(220), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    urgency: Mapped[str] = mapped_column(String(16))
    urgency_rank: Mapped[int] = mapped_column(Integer, index=True)
    risk: Mapped[float] = mapped_column(Float)
    days_to_failure: Mapped[float | None] = mapped_column(Float)
    days_to_failure_low: Mapped[float | None] = mapped_column(Float)
    days_to_failure_high: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(128))
    evidence: Mapped[list[Any]] = mapped_column(JSON, default=list)
    action_kind: Mapped[str] = mapped_column(String(32))
    recommended_action: Mapped[str] = mapped_column(Text)
    co2e_avoided_kg: Mapped[float] = mapped_column(Float, default=0.0)
    storm_key: Mapped[str] = mapped_column(String(400), index=True)
    storm_group: Mapped[str | None] = mapped_column(ForeignKey("storm_groups.group_id"), index=True)
    last_alert_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
    """confirmed_fault / no_fault_found / false_alarm, once a closed ticket's result is recorded."""
    alert_cleared_at: Mapped[datetime | None]
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[datetime]


class TicketEvent(Base):
    """Every change of a ticket with who and when: the audit trail."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")


class AlertSeen(Base):
    __tablename__ = "alerts_seen"

    alert_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(32))


class RiskPoint(Base):
    """Downsampled risk history for the device page plot."""

    __tablename__ = "risk_history"
    __table_args__ = (Index("ix_risk_history_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    component: Mapped[str] = mapped_column(String(16))
    component_id: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[datetime]
    risk: Mapped[float] = mapped_column(Float)
    horizon_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    replace_in_days: Mapped[float | None] = mapped_column(Float)
    """The part's own estimate of days until it needs replacing (battery: 60 % capacity); the forecast reads it."""


class OutboxRow(Base):
    """A message owed to a connector (or the labels topic); deleted never, delivered eventually."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("target", "dedup_key", name="uq_outbox_target_dedup"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    external_ref: Mapped[str | None] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(64))
    """The target's own id of the incident (ServiceNow's sys_id): updates address the incident by it."""
    last_error: Mapped[str | None] = mapped_column(Text)


class LoginFailure(Base):
    """Recent failed logins per throttle key, shared by every API replica on this database.

    ``key`` is an HMAC under the session key of the login name + client address (or of the address
    alone, for spraying across names): neither is stored, not even as a digest anyone could recompute
    (mistyped passwords entered as login names included).
    """

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    blocked_until: Mapped[datetime]


class PasswordUpgrade(Base):
    """A configured password hash replaced by a current-scheme hash at a successful login.

    Valid only while the configured hash is unchanged (``configured_sha256``): an operator
    who sets a new password in the configuration makes the upgrade void.
    """

    __tablename__ = "api_password_upgrades"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    configured_sha256: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(512))
    upgraded_at: Mapped[datetime]


class WebSession(Base):
    """A logged-in page session; the browser holds only the signed id, stored here as its SHA-256."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    sites: Mapped[list[Any]] = mapped_column(JSON)
    departments: Mapped[list[Any]] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(8))
    """``oidc`` or ``local``."""
    issuer: Mapped[str | None] = mapped_column(String(512))
    subject: Mapped[str | None] = mapped_column(String(256))
    id_token: Mapped[str | None] = mapped_column(Text)
    """Kept for the provider's logout (``id_token_hint``)."""
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class PendingLogin(Base):
    """A login sent to the provider and not yet back: bound to the browser by a cookie, used once."""

    __tablename__ = "pending_logins"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(512))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    source_key: Mapped[str | None] = mapped_column(String(64), index=True)
    """An HMAC of the address (IPv6: its /64) that began the login, under the session key: bounds the logins one
    address holds without storing the address. None for logins begun before the column existed."""


class AuditRecord(Base):
    """One entry of the append-only, hash-chained audit trail (see :mod:`fleetpulse.alerts.store.audit`).

    ``payload`` is stored as the exact canonical JSON text that was hashed, so verifying
    never depends on how a backend round-trips JSON.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    actor_issuer: Mapped[str] = mapped_column(String(255))
    actor_subject: Mapped[str] = mapped_column(String(255))
    actor_name: Mapped[str] = mapped_column(String(255))
    actor_role: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip (one row, id 1): appends lock it, so they are serialised on every backend."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class FeatureLogRow(Base):
    """The worker's feature log (``FeatureLogRecord``): what fleet retraining reads, in one SQL place."""

    __tablename__ = "feature_log"
    __table_args__ = (Index("ix_feature_log_component_day", "component", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    log_key: Mapped[str] = mapped_column(String(400), unique=True)
    """``FeatureLogRecord.log_key``: a repeated daily record (rescore, replay) is the same row."""
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    component: Mapped[str] = mapped_column(String(16))
    component_id: Mapped[str] = mapped_column(String(128), default="")
    hardware_model: Mapped[str | None] = mapped_column(String(128))
    day: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(16))
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    risk: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(128))
    collected_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    scored_at: Mapped[datetime]
    report_seq: Mapped[int] = mapped_column(BigInteger)


class FailureReport(Base):
    """A label no ticket produced, recorded by a fleet manager: a missed failure or a retired device."""

    __tablename__ = "failure_reports"
    __table_args__ = (UniqueConstraint("device_id", "component", "component_id", "on_day", "outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    component: Mapped[str] = mapped_column(String(16))
    component_id: Mapped[str] = mapped_column(String(128), default="")
    on_day: Mapped[date] = mapped_column(Date)
    outcome: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime]

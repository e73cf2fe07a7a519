"""The audit trail: append-only, hash-chained records of who did what, from where, and when.

NIS2 auditors ask who approved which replacement, who exported personal data and whether
the connectors received the tickets. Every record names the identity as the login provider
asserted it (issuer + subject + display name; ``local`` for local accounts and tokens),
the role, the request id and the source address, and carries the SHA-256 of its
predecessor and its own SHA-256 over a canonical serialisation: editing, deleting,
inserting or reordering a record breaks the chain, and ``fleetpulse audit verify`` names
the first broken record. Records staged in a ticket-store transaction are appended at its
commit, after every other write, by locking the one ``audit_head`` row: appends from any
number of processes get one order, and the head lock is always the last lock a
transaction takes (no deadlock with ticket rows). Triggers (migration 0005) refuse
UPDATE and DELETE; only :func:`prune` may delete a prefix of the chain, and it leaves a
checkpoint record stating the hash it cut at, so the rest stays verifiable.

A database owner who rewrites the whole chain from some record on cannot be detected from
inside the database: keep the head printed by ``audit verify`` somewhere else (ticket,
log archive) and pass it back with ``--anchor``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.orm import Session

from fleetpulse.alerts.store.models import AuditHead, AuditRecord, TicketEvent
from fleetpulse.compat import StrEnum, csv_writer

GENESIS = "0" * 64
"""The predecessor hash of record 1."""
CANONICAL_FORMAT = 1
"""Version of the hashed serialisation; a new format needs a new number, old records keep theirs."""
LOCAL_ISSUER = "local"
PRUNE_SETTING = "fleetpulse.audit_prune"
"""PostgreSQL: the transaction-local setting that lets the guard trigger accept a prune's DELETE."""
_PENDING = "fleetpulse.audit.pending"
_LIMITS = {"actor_issuer": 255, "actor_subject": 255, "actor_name": 255, "actor_role": 64, "request_id": 128}


class AuditKind(StrEnum):
    """Kinds recorded besides the ticket events (``ticket.<event>``, e.g. ``ticket.transition``)."""

    LOGIN_SUCCESS = "login.success"
    LOGIN_FAILURE = "login.failure"
    LOGOUT = "session.logout"
    TOKEN_USE = "token.use"  # noqa: S105 - a record kind, not a secret
    BASIC_USE = "basic.use"
    CSV_EXPORT = "export.csv"
    BULK_ACTION = "tickets.bulk"
    OUTBOX_RETRY = "outbox.retry"
    DELIVERED = "delivery.delivered"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_NEEDS_ATTENTION = "delivery.needs_attention"
    PRUNED = "audit.pruned"
    FAILURE_REPORT = "label.failure_report"
    MODEL_PROMOTED = "model.promoted"
    MODEL_PROMOTED_OVERRIDE = "model.promoted_override"


def ticket_kind(event_kind: str) -> str:
    return f"ticket.{event_kind}"


@dataclass(frozen=True)
class AuditActor:
    """The identity as asserted: the provider's issuer and subject, its display name, the mapped role."""

    issuer: str
    subject: str
    display_name: str
    role: str

    @classmethod
    def local(cls, name: str, role: str = "") -> AuditActor:
        """A local account, bearer token or Basic user: the issuer is ``local``, the subject its name."""
        return cls(LOCAL_ISSUER, name, name, role)


SYSTEM = AuditActor(LOCAL_ISSUER, "fleetpulse", "fleetpulse", "system")
"""The pipeline itself: alert-driven ticket events and connector deliveries."""


@dataclass(frozen=True)
class AuditContext:
    """Who acts and from where, as the API knows it for one request."""

    actor: AuditActor
    request_id: str = ""
    source: str = ""


SYSTEM_CONTEXT = AuditContext(SYSTEM)


@dataclass(frozen=True)
class _Entry:
    kind: str
    context: AuditContext
    payload: str


class AuditRecordView(BaseModel):
    """One record as read back (the read-only admin view and the export)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: datetime
    kind: str
    actor_issuer: str
    actor_subject: str
    actor_name: str
    actor_role: str
    request_id: str
    source: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


EXPORT_COLUMNS = list(AuditRecordView.model_fields)


def canonical_payload(payload: dict[str, Any] | None) -> str:
    """Sorted keys, no whitespace, non-JSON values as strings: the exact text stored and hashed."""
    return json.dumps(payload or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_HASHED = EXPORT_COLUMNS[:-1]
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _digest(fields: Sequence[Any]) -> str:
    """SHA-256 of ``[format, seq, at, kind, issuer, subject, name, role, request_id, source, payload, prev_hash]``."""
    body = [CANONICAL_FORMAT, fields[0], fields[1].isoformat(timespec="microseconds"), *fields[2:11]]
    return hashlib.sha256(_ENCODE(body).encode()).hexdigest()


def chain_hash(row: Any) -> str:
    """SHA-256 over the canonical serialisation of every stored field but the hash itself."""
    return _digest([getattr(row, name) for name in _HASHED])


def stage(
    session: Session,
    kind: str,
    context: AuditContext = SYSTEM_CONTEXT,
    payload: dict[str, Any] | None = None,
) -> None:
    """Record ``kind`` when ``session``'s transaction commits (and never if it rolls back)."""
    session.info.setdefault(_PENDING, []).append(_Entry(kind, context, canonical_payload(payload)))


def discard_staged(session: Session) -> None:
    session.info.pop(_PENDING, None)


def append_staged(session: Session, now: datetime) -> None:
    """Give the staged records their place in the chain; called by the store just before commit."""
    entries: list[_Entry] | None = session.info.pop(_PENDING, None)
    if entries:
        # every other write first: a transaction holding the head lock then waits on nothing
        # but its commit, so it can never be part of a lock cycle with ticket or alert rows
        session.flush()
        _append(session, entries, now)


def _append(session: Session, entries: Sequence[_Entry], now: datetime) -> list[AuditRecordView]:
    # the UPDATE takes the head row's write lock (PostgreSQL row lock, SQLite's database
    # write lock) until commit; the SELECT after it reads the tip the previous writer left
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    if head is None:
        raise RuntimeError("the audit head row is missing: run `fleetpulse db upgrade`")
    seq, prev = head.seq, head.hash
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        actor = entry.context.actor
        row: dict[str, Any] = {
            "seq": seq,
            "at": now,
            "kind": entry.kind[:64],
            "actor_issuer": actor.issuer,
            "actor_subject": actor.subject,
            "actor_name": actor.display_name,
            "actor_role": actor.role,
            "request_id": entry.context.request_id,
            "source": entry.context.source[:128],
            "payload": entry.payload,
            "prev_hash": prev,
        }
        for name, limit in _LIMITS.items():
            row[name] = str(row[name])[:limit]
        row["hash"] = prev = chain_hash(_Row(row))
        rows.append(row)
    session.execute(insert(AuditRecord), rows)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))
    return [_view(_Row(r)) for r in rows]


class _Row:
    """Attribute access over a dict, so :func:`chain_hash` reads rows, ORM objects and drafts alike."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _view(row: Any) -> AuditRecordView:
    data = {name: getattr(row, name) for name in EXPORT_COLUMNS}
    data["payload"] = json.loads(row.payload)
    return AuditRecordView.model_validate(data)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_seq: int | None
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""


_COLUMNS = [getattr(AuditRecord, name) for name in EXPORT_COLUMNS]


class AuditLog:
    """Recording, verifying, exporting and pruning the trail of one ticket store.

    Nothing here updates or deletes a record, except :meth:`prune` (whole prefixes, with
    a checkpoint); the API gets :meth:`record` and :meth:`records` only.
    """

    def __init__(self, engine: Engine, session_factory: Callable[[], Any], clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._session = session_factory
        self._clock = clock

    def record(
        self,
        kind: str,
        actor: AuditActor,
        request_id: str = "",
        source: str = "",
        payload: dict[str, Any] | None = None,
    ) -> AuditRecordView:
        """Append one record in its own transaction (logins, CSV exports, logouts, token and basic use)."""
        entry = _Entry(kind, AuditContext(actor, request_id, source), canonical_payload(payload))
        with self._session() as session:
            (view,) = _append(session, [entry], self._clock())
            return view

    def records(self, after_seq: int = 0, limit: int = 500, kind: str | None = None) -> list[AuditRecordView]:
        """Read-only page of the trail in chain order (for an admin view)."""
        query = select(*_COLUMNS).where(AuditRecord.seq > after_seq).order_by(AuditRecord.seq).limit(limit)
        if kind is not None:
            query = query.where(AuditRecord.kind == kind)
        with self.engine.connect() as conn:
            return [_view(row) for row in conn.execute(query)]

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One read transaction over one snapshot: appends and prunes running meanwhile stay invisible."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if self.engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN")  # pysqlite defers BEGIN to the first write otherwise
                yield conn

    @staticmethod
    def _pages(
        conn: Connection, page: int, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[Any]:
        """Every record in chain order, fetched by key ranges so memory stays flat for any length."""
        after = -1
        while True:
            query = select(*_COLUMNS).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(page)
            if since is not None:
                query = query.where(AuditRecord.at >= since)
            if until is not None:
                query = query.where(AuditRecord.at < until)
            rows = conn.execute(query).all()
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq

    def verify(self, anchor: tuple[int, str] | None = None, page: int = 5000) -> VerifyResult:
        """Walk the whole chain; stop at the first record that does not fit (with the reason)."""
        with self._snapshot() as conn:
            return self._verify(conn, anchor, page)

    def _verify(self, conn: Connection, anchor: tuple[int, str] | None, page: int) -> VerifyResult:
        head = conn.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
        checkpoint = conn.execute(
            select(AuditRecord.payload)
            .where(AuditRecord.kind == AuditKind.PRUNED.value)
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
        checked = 0
        first: int | None = None
        expected_prev, prev_seq = GENESIS, 0
        anchored = anchor is None

        def broken(seq: int | None, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, first, head_seq, head_hash, seq, reason)

        for row in self._pages(conn, page):
            if first is None:
                first = row.seq
                if row.seq != 1:
                    cut = _payload_object(checkpoint)
                    if cut.get("pruned_through") != row.seq - 1 or cut.get("head_hash") != row.prev_hash:
                        return broken(
                            row.seq, f"records 1..{row.seq - 1} are missing and no prune checkpoint covers them"
                        )
                    expected_prev, prev_seq = row.prev_hash, row.seq - 1
            if row.seq != prev_seq + 1:
                return broken(row.seq, f"records {prev_seq + 1}..{row.seq - 1} are missing")
            if row.prev_hash != expected_prev:
                return broken(
                    row.seq, f"its predecessor hash does not match record {prev_seq} (one of them was altered)"
                )
            if _digest(row) != row.hash:
                return broken(row.seq, "its content does not match its hash (altered)")
            if anchor is not None and row.seq == anchor[0]:
                if row.hash != anchor[1]:
                    return broken(row.seq, "its hash differs from the anchor kept outside the database")
                anchored = True
            expected_prev, prev_seq = row.hash, row.seq
            checked += 1
        if prev_seq == head_seq and expected_prev != head_hash:
            return broken(prev_seq, "its hash differs from the head's (the newest record was altered)")
        if prev_seq != head_seq:
            return broken(prev_seq + 1, f"the chain ends at record {prev_seq} but the head says {head_seq}")
        if not anchored:
            return broken(anchor[0] if anchor else None, "the anchored record is no longer in the trail")
        return VerifyResult(True, checked, first, head_seq, head_hash)

    def export(
        self, out: io.TextIOBase | Any, fmt: Literal["jsonl", "csv"], since: datetime | None, until: datetime | None
    ) -> int:
        """Write the records with ``since <= at < until`` for an auditor; returns how many."""
        count = 0
        writer = csv_writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        with self._snapshot() as conn:
            for row in self._pages(conn, 5000, since, until):
                view = _view(row)
                if writer is None:
                    out.write(view.model_dump_json() + "\n")
                else:
                    values = view.model_dump(mode="json")
                    values["payload"] = row.payload
                    writer.writerow([_csv_cell(values[c]) for c in EXPORT_COLUMNS])
                count += 1
        return count

    def prune(self, before: datetime) -> int:
        """Delete the oldest records up to the first one at or after ``before``; returns how many.

        The chain stays verifiable: a checkpoint record (itself chained) names the last
        deleted sequence number and its hash, which the first kept record points to.
        """
        with self._session() as session:
            session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))  # appends wait
            head_seq = session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one()
            young = session.execute(
                select(AuditRecord.seq).where(AuditRecord.at >= before).order_by(AuditRecord.seq).limit(1)
            ).scalar_one_or_none()
            through = (young if young is not None else head_seq + 1) - 1
            cut_hash = session.execute(select(AuditRecord.hash).where(AuditRecord.seq == through)).scalar_one_or_none()
            if cut_hash is None:
                return 0  # nothing older, or already pruned up to there
            if self.engine.dialect.name == "postgresql":
                session.execute(text("SELECT set_config(:name, 'on', true)"), {"name": PRUNE_SETTING})
            else:
                session.execute(text("INSERT INTO audit_prune_permit (id) VALUES (1)"))
            removed = session.execute(delete(AuditRecord).where(AuditRecord.seq <= through))
            if self.engine.dialect.name != "postgresql":
                session.execute(text("DELETE FROM audit_prune_permit"))
            count = int(getattr(removed, "rowcount", 0) or 0)
            payload = {"pruned_through": through, "head_hash": cut_hash, "removed": count, "before": before.isoformat()}
            _append(
                session, [_Entry(AuditKind.PRUNED.value, SYSTEM_CONTEXT, canonical_payload(payload))], self._clock()
            )
            return count


def adopt_ticket_events(session: Session, now: datetime) -> int:
    """Chain every ticket event that no record covers yet (those written before the trail existed).

    Each becomes a ``ticket.<kind>`` record at ``now`` whose payload carries the event's own
    time, its bare actor name and ``"imported": true``: from here on that history is
    tamper-evident too. An event is covered when a chained record names its ticket, kind and
    time (every event since the trail is written to both). Events older than the latest
    prune cut are past retention and stay out. Returns how many were chained.
    """
    covered: set[tuple[int, str, datetime]] = set()
    cut: datetime | None = None
    rows = session.execute(
        select(AuditRecord.kind, AuditRecord.payload).where(
            AuditRecord.kind.like("ticket.%") | (AuditRecord.kind == AuditKind.PRUNED.value)
        )
    )
    for kind, stored in rows:
        data = _payload_object(stored)
        if kind == AuditKind.PRUNED.value:
            before = _aware(data.get("before"))
            cut = before if cut is None or (before is not None and before > cut) else cut
            continue
        at = _aware(data.get("event_at"))
        if isinstance(data.get("ticket_id"), int) and at is not None:
            covered.add((data["ticket_id"], kind, at))
    entries: list[_Entry] = []
    for event in session.scalars(select(TicketEvent).order_by(TicketEvent.id)):
        kind = ticket_kind(event.kind)
        if (event.ticket_id, kind, event.at) in covered or (cut is not None and event.at < cut):
            continue
        payload = {
            "ticket_id": event.ticket_id,
            "event_at": event.at.isoformat(),
            "from": event.from_state,
            "to": event.to_state,
            "note": event.note,
            "actor": event.actor,
            "imported": True,
        }
        entries.append(_Entry(kind, SYSTEM_CONTEXT, canonical_payload(payload)))
    if entries:
        _append(session, entries, now)
    return len(entries)


def _aware(value: Any) -> datetime | None:
    """An ISO time from a payload as an aware datetime; anything else is None."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return None if parsed is None or parsed.tzinfo is None else parsed


def _payload_object(payload: str | None) -> dict[str, Any]:
    """A stored payload as a JSON object; anything unreadable is empty (a prune checkpoint that is no
    checkpoint, reported as such; an event record that covers no event)."""
    try:
        cut = json.loads(payload) if payload is not None else {}
    except ValueError:
        return {}
    return cut if isinstance(cut, dict) else {}


_CONTROLS_AND_SPACE = "".join(map(chr, range(0x21)))


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula (CSV injection): one starting with = + - @, also
    after spaces or control characters a spreadsheet may drop (NUL), or with a tab or carriage return, gets a
    leading apostrophe."""
    risky = text[:1] in ("\t", "\r") or text.lstrip(_CONTROLS_AND_SPACE)[:1] in ("=", "+", "-", "@")
    return f"'{text}" if risky else text


def _csv_cell(value: object) -> str:
    return spreadsheet_safe("" if value is None else str(value))

"""Page sessions and pending single sign-on logins, kept in the ticket store.

In the database rather than in memory so that every API replica knows every session and a
logout or timeout ends a session everywhere at once. The browser holds the random session id;
the table holds only its SHA-256, so a read of the database yields no usable session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from fleetpulse.alerts.store import PENDING_LOGINS_LOCK
from fleetpulse.alerts.store.models import PendingLogin, WebSession
from fleetpulse.alerts.store.repository import TicketStore

TOUCH_EVERY = timedelta(minutes=1)
"""The idle clock is moved at most this often: one write a minute per session, not per request."""


def _digest(secret_id: str) -> str:
    return hashlib.sha256(secret_id.encode()).hexdigest()


@dataclass(frozen=True)
class StoredSession:
    """Who a session belongs to, what they may see, and its CSRF token."""

    csrf_token: str
    name: str
    role: str
    sites: frozenset[str]
    departments: frozenset[str]
    method: str
    issuer: str | None
    subject: str | None
    id_token: str | None


def _record(row: WebSession) -> StoredSession:
    return StoredSession(
        row.csrf_token,
        row.name,
        row.role,
        frozenset(row.sites),
        frozenset(row.departments),
        row.method,
        row.issuer,
        row.subject,
        row.id_token,
    )


@dataclass(frozen=True)
class StoredPendingLogin:
    state: str
    nonce: str
    code_verifier: str
    next_path: str


class WebSessions:
    """Create, look up (with idle and absolute timeouts), and end page sessions; pending logins, used once."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    def create(self, session_id: str, record: StoredSession, now: datetime, absolute_timeout: timedelta) -> None:
        with self.store.session() as session:
            session.add(
                WebSession(
                    id_sha256=_digest(session_id),
                    csrf_token=record.csrf_token,
                    name=record.name,
                    role=record.role,
                    sites=sorted(record.sites),
                    departments=sorted(record.departments),
                    method=record.method,
                    issuer=record.issuer,
                    subject=record.subject,
                    id_token=record.id_token,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + absolute_timeout,
                )
            )

    def find(self, session_id: str, now: datetime, idle_timeout: timedelta) -> StoredSession | None:
        """The live session, its idle clock moved; an expired or idle one is deleted and None returned."""
        key = _digest(session_id)
        with self.store.session() as session:
            row = session.get(WebSession, key)
            if row is None:
                return None
            if row.expires_at <= now or row.last_seen_at + idle_timeout <= now:
                session.delete(row)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                session.execute(update(WebSession).where(WebSession.id_sha256 == key).values(last_seen_at=now))
            return _record(row)

    def end(self, session_id: str) -> StoredSession | None:
        """Delete the session (logout); what it was, for the provider's logout."""
        key = _digest(session_id)
        with self.store.session() as session:
            row = session.get(WebSession, key)
            if row is None:
                return None
            ended = _record(row)
            session.delete(row)
            return ended

    def start_login(
        self,
        login_id: str,
        pending: StoredPendingLogin,
        now: datetime,
        expires_at: datetime,
        source_key: str,
        per_source: int,
        total: int,
    ) -> bool:
        """Keep a pending login; False, keeping nothing, when ``total`` are kept already.

        The source's oldest logins beyond ``per_source - 1`` are dropped first: a person who starts
        login after login still gets in, and one source only ever recycles its own rows. Expired
        rows are dropped before the count, so only logins that can still complete fill the table.
        Starts at the same moment (threads, replicas) take turns (:func:`_serialise_starts`).
        """
        with self.store.session() as session:
            _serialise_starts(session)
            kept = (
                select(PendingLogin.id_sha256)
                .where(PendingLogin.source_key == source_key, PendingLogin.expires_at > now)
                .order_by(PendingLogin.expires_at.desc(), PendingLogin.id_sha256)
                .limit(per_source - 1)
            )
            session.execute(
                delete(PendingLogin)
                .where(PendingLogin.source_key == source_key, PendingLogin.id_sha256.not_in(kept))
                .execution_options(synchronize_session=False)
            )
            count = select(func.count()).select_from(PendingLogin)
            if (session.scalar(count) or 0) >= total:
                session.execute(delete(PendingLogin).where(PendingLogin.expires_at <= now))
                if (session.scalar(count) or 0) >= total:
                    return False
            session.add(
                PendingLogin(
                    id_sha256=_digest(login_id),
                    state=pending.state,
                    nonce=pending.nonce,
                    code_verifier=pending.code_verifier,
                    next_path=pending.next_path,
                    expires_at=expires_at,
                    source_key=source_key,
                )
            )
            return True

    def take_login(self, login_id: str, now: datetime) -> StoredPendingLogin | None:
        """The pending login of this browser, removed (a callback is accepted once), or None if none or expired."""
        with self.store.session() as session:
            row = session.get(PendingLogin, _digest(login_id))
            if row is None:
                return None
            session.delete(row)
            if row.expires_at <= now:
                return None
            return StoredPendingLogin(row.state, row.nonce, row.code_verifier, row.next_path)

    def prune(self, now: datetime, idle_timeout: timedelta) -> int:
        """Drop expired sessions and abandoned logins."""
        with self.store.session() as session:
            ended = session.execute(
                delete(WebSession).where(
                    (WebSession.expires_at <= now) | (WebSession.last_seen_at <= now - idle_timeout)
                )
            )
            abandoned = session.execute(delete(PendingLogin).where(PendingLogin.expires_at <= now))
            return int(getattr(ended, "rowcount", 0) or 0) + int(getattr(abandoned, "rowcount", 0) or 0)


def _serialise_starts(session: Session) -> None:
    """Make this transaction's count and insert of pending logins one step for every replica: concurrent
    starts that each counted before any inserted would all pass a bound. The first statement of the transaction.

    SQLite: ``BEGIN IMMEDIATE`` takes the database's one write lock before the count, where a deferred
    transaction takes it only at its first write. PostgreSQL: an advisory lock on a fixed key, held until
    commit or rollback; the statements after it (READ COMMITTED, the store's isolation) see every start
    committed before it was granted. SERIALIZABLE would refuse all but one of a burst of starts and need a
    retry loop; the lock just queues them, for the few milliseconds a start takes. Taking a login and
    pruning skip the lock: removing rows cannot break a bound.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PENDING_LOGINS_LOCK})
    elif session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")

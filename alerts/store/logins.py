"""Login failure counts and upgraded password hashes of the API, kept in the ticket store.

In the database rather than in memory so that every API replica counts the same failures:
an attacker spreading guesses over the replicas behind a load balancer gains nothing.
Counting is one atomic upsert per failure, correct under concurrent replicas on PostgreSQL
(row lock of the conflicting key) and SQLite (one writer at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fleetpulse.alerts.store.models import LoginFailure, PasswordUpgrade
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC

NEVER_BLOCKED = datetime(1970, 1, 1, tzinfo=UTC)
"""``blocked_until`` of a key whose failures are all free: before any clock reading of any replica."""


def _insert(session: Session) -> Callable[[Any], Any]:
    """The dialect's INSERT with ``ON CONFLICT`` support (both store backends have it)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


@dataclass(frozen=True)
class Attempt:
    """One counted attempt of a throttle key, and the block it left (see :meth:`LoginRecords.record_failure`)."""

    key: str
    allowed: bool
    failures: int
    blocked_before: datetime
    blocked_until: datetime


class LoginRecords:
    """Failure counts per throttle key and current-scheme password hashes, on the ticket store."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    def failures(self, keys: Sequence[str]) -> dict[str, tuple[int, datetime]]:
        """``key -> (failures, blocked_until)`` of the keys with failures on record."""
        with self.store.session() as session:
            rows = session.execute(
                select(LoginFailure.key, LoginFailure.failures, LoginFailure.blocked_until).where(
                    LoginFailure.key.in_(keys)
                )
            )
            return {key: (failures, blocked_until) for key, failures, blocked_until in rows}

    def record_failure(
        self, key: str, now: datetime, forget_after: timedelta, block_for: Callable[[int], timedelta]
    ) -> Attempt:
        """Count one failure of ``key`` (from 1 again after ``forget_after`` without failures) and block
        the key for ``block_for(failures)`` from now, unless it is blocked already: then the failure is
        not counted and the attempt is refused (``allowed`` False).

        Callers count an attempt *before* checking the password and :meth:`cancel` it on success,
        so concurrent attempts are admitted one by one: a burst of guesses cannot slip past the block.
        """
        table = LoginFailure.__table__
        with self.store.session() as session:
            upsert = _insert(session)(table).values(
                key=key, failures=1, last_failure_at=now, blocked_until=NEVER_BLOCKED
            )
            upsert = upsert.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "failures": case((table.c.last_failure_at < now - forget_after, 1), else_=table.c.failures + 1),
                    "last_failure_at": now,
                },
            ).returning(table.c.failures, table.c.blocked_until)
            failures, blocked_until = session.execute(upsert).one()
            row = update(LoginFailure).where(LoginFailure.key == key)
            if blocked_until > now:
                session.execute(row.values(failures=LoginFailure.failures - 1))
                return Attempt(key, False, failures - 1, blocked_until, blocked_until)
            block = block_for(failures)
            if block <= timedelta(0):
                # a free failure leaves the block as it is: set to `now`, it would refuse a concurrent
                # attempt whose clock reading is a moment older
                return Attempt(key, True, failures, blocked_until, blocked_until)
            until = max(blocked_until, now + block)
            session.execute(row.values(blocked_until=until))
            return Attempt(key, True, failures, blocked_until, until)

    def cancel(self, attempt: Attempt) -> None:
        """The attempt succeeded: uncount it, and lift the block it set unless a later failure replaced it."""
        with self.store.session() as session:
            session.execute(
                update(LoginFailure)
                .where(LoginFailure.key == attempt.key)
                .values(
                    failures=case((LoginFailure.failures > 0, LoginFailure.failures - 1), else_=0),
                    blocked_until=case(
                        (LoginFailure.blocked_until == attempt.blocked_until, attempt.blocked_before),
                        else_=LoginFailure.blocked_until,
                    ),
                )
            )

    def clear(self, key: str) -> None:
        with self.store.session() as session:
            session.execute(delete(LoginFailure).where(LoginFailure.key == key))

    def prune(self, now: datetime, forget_after: timedelta) -> int:
        """Drop counts that are forgotten and no longer block: the table stays as small as the attack is recent."""
        with self.store.session() as session:
            result = session.execute(
                delete(LoginFailure).where(
                    LoginFailure.last_failure_at < now - forget_after, LoginFailure.blocked_until < now
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def upgraded_hash(self, name: str, configured_sha256: str) -> str | None:
        """The current-scheme hash of ``name``, if it was made from the password hash configured now."""
        with self.store.session() as session:
            row = session.get(PasswordUpgrade, name)
            return row.password_hash if row is not None and row.configured_sha256 == configured_sha256 else None

    def save_upgraded_hash(self, name: str, configured_sha256: str, password_hash: str, now: datetime) -> None:
        table = PasswordUpgrade.__table__
        with self.store.session() as session:
            values = {
                "name": name,
                "configured_sha256": configured_sha256,
                "password_hash": password_hash,
                "upgraded_at": now,
            }
            upsert = _insert(session)(table).values(**values)
            session.execute(upsert.on_conflict_do_update(index_elements=[table.c.name], set_=values))

"""login throttle counts are keyed by an HMAC under the session key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:50:00

A throttle key was a plain SHA-256 of the client address (and login name): hashing every IPv4
address recovers the address from a copy of the table. Keys are HMACs under the session cookie
key now, as ``pending_logins.source_key`` is, and a plain digest cannot be converted to one.
The rows are short-lived counters (forgotten after ``forget_after``, 1 h by default), so they
are deleted: failures counted before the upgrade are forgotten and blocks in force end early.
A downgrade deletes the keyed rows the same way: the older version cannot read them.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM login_failures")


def downgrade() -> None:
    op.execute("DELETE FROM login_failures")

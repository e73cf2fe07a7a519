"""ticket events recorded before the audit trail join its chain

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:00:00

Events written before 0005 live only in ``ticket_events``, which anyone with database
access can edit unseen. Each is appended to the chain once, as a ``ticket.<kind>`` record
carrying its own time, bare actor name and ``"imported": true``
(:func:`fleetpulse.alerts.store.audit.adopt_ticket_events`). Downgrading keeps the records:
the trail is append-only.
"""

from __future__ import annotations

from datetime import datetime

from alembic import op
from sqlalchemy.orm import Session

from fleetpulse.alerts.store.audit import adopt_ticket_events
from fleetpulse.compat import UTC

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    session = Session(bind=op.get_bind())
    adopt_ticket_events(session, datetime.now(UTC))
    session.flush()


def downgrade() -> None:
    pass

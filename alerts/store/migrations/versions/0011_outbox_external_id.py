"""outbox rows keep the target's own id of the incident

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:40:00

ServiceNow returns a sys_id for a new incident: an update addressed by it needs no lookup by
correlation id. Incidents delivered before the upgrade have none and are looked up as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("external_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("external_id")

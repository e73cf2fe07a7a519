"""ticket outcome column

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:20:00

The outcome a technician records when closing a ticket, as a column so the
dashboards' ticket snapshot (precision per component) can count it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("outcome")

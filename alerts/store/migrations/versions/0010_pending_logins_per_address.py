"""pending single sign-on logins know which address began them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:00:00

Anyone can start a login, and each start is kept until the login timeout: the number one
address may hold is bounded by a keyed digest of that address (never the address itself).
Logins begun before the upgrade have none and lapse at their timeout as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pending_logins", sa.Column("source_key", sa.String(length=64), nullable=True))
    op.create_index("ix_pending_logins_source_key", "pending_logins", ["source_key"])


def downgrade() -> None:
    op.drop_index("ix_pending_logins_source_key", table_name="pending_logins")
    op.drop_column("pending_logins", "source_key")

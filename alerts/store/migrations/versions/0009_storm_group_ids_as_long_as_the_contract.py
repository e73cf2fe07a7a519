"""storm group ids as long as the contract allows

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 12:00:00

An alert's ``storm_group`` may be up to 128 characters (contract ``ShortText``), but
``storm_groups.group_id`` and ``tickets.storm_group`` held 64: PostgreSQL refused such an
alert on every redelivery. SQLite does not enforce VARCHAR lengths, and changing a declared
type there means rebuilding ``storm_groups``, which ``tickets`` references and which SQLite
cannot drop inside the migration's transaction with foreign keys on: its schema is left as
it is. A downgrade fails while a longer id is stored (shortening it would lose the group).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _resize(64, 128)


def downgrade() -> None:
    _resize(128, 64)


def _resize(old: int, new: int) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("storm_groups", "group_id", type_=sa.String(new), existing_type=sa.String(old), nullable=False)
    op.alter_column("tickets", "storm_group", type_=sa.String(new), existing_type=sa.String(old), nullable=True)

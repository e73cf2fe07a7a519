"""risk history carries the forecast's inputs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:50:00

The parts forecast reads each component's latest score from the risk history: it needs
the horizon the risk refers to and, for batteries, the days until replacement is due.
Rows written before this revision have neither (horizon 30 days, the horizon every
scorer served then; no battery estimate).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("risk_history") as batch:
        batch.add_column(sa.Column("horizon_days", sa.Integer(), nullable=False, server_default="30"))
        batch.add_column(sa.Column("replace_in_days", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("risk_history") as batch:
        batch.drop_column("replace_in_days")
        batch.drop_column("horizon_days")

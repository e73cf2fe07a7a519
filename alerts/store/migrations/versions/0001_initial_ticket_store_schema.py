"""initial ticket store schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 00:25:37.915312
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("vendor", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("purchase_date", sa.Date(), nullable=True),
        sa.Column("warranty_end", sa.Date(), nullable=True),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=128), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_ref", sa.String(length=200), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target", "dedup_key", name="uq_outbox_target_dedup"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_delivered_at"), ["delivered_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False)

    op.create_table(
        "risk_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("component_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("risk_history", schema=None) as batch_op:
        batch_op.create_index("ix_risk_history_device_at", ["device_id", "at"], unique=False)

    op.create_table(
        "storm_groups",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("storm_key", sa.String(length=400), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.String(length=128), nullable=False),
        sa.Column("device_model", sa.String(length=128), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("group_id"),
    )
    with op.batch_alter_table("storm_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_storm_groups_storm_key"), ["storm_key"], unique=False)

    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("component_id", sa.String(length=128), nullable=False),
        sa.Column("open_key", sa.String(length=220), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("urgency_rank", sa.Integer(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("days_to_failure", sa.Float(), nullable=True),
        sa.Column("days_to_failure_low", sa.Float(), nullable=True),
        sa.Column("days_to_failure_high", sa.Float(), nullable=True),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("action_kind", sa.String(length=32), nullable=False),
        sa.Column("recommended_action", sa.Text(), nullable=False),
        sa.Column("co2e_avoided_kg", sa.Float(), nullable=False),
        sa.Column("storm_key", sa.String(length=400), nullable=False),
        sa.Column("storm_group", sa.String(length=64), nullable=True),
        sa.Column("last_alert_id", sa.String(length=128), nullable=False),
        sa.Column("alert_cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["storm_group"],
            ["storm_groups.group_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tickets_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_opened_at"), ["opened_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_storm_group"), ["storm_group"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_storm_key"), ["storm_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_tickets_urgency_rank"), ["urgency_rank"], unique=False)

    op.create_table(
        "alerts_seen",
        sa.Column("alert_id", sa.String(length=128), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
        ),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ticket_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_events_ticket_id"), ["ticket_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("ticket_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_events_ticket_id"))

    op.drop_table("ticket_events")
    op.drop_table("alerts_seen")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_urgency_rank"))
        batch_op.drop_index(batch_op.f("ix_tickets_storm_key"))
        batch_op.drop_index(batch_op.f("ix_tickets_storm_group"))
        batch_op.drop_index(batch_op.f("ix_tickets_state"))
        batch_op.drop_index(batch_op.f("ix_tickets_opened_at"))
        batch_op.drop_index(batch_op.f("ix_tickets_device_id"))

    op.drop_table("tickets")
    with op.batch_alter_table("storm_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storm_groups_storm_key"))

    op.drop_table("storm_groups")
    with op.batch_alter_table("risk_history", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_history_device_at")

    op.drop_table("risk_history")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_outbox_delivered_at"))

    op.drop_table("outbox")
    op.drop_table("devices")

"""feature log and failure reports (fleet retraining)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00

``feature_log`` holds the worker's feature-log records (one row per ``log_key``: a daily
record repeated by a rescore or a replay is the same row); ``failure_reports`` the labels
fleet managers record without a ticket (missed failures, retired devices).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("log_key", sa.String(length=400), nullable=False, unique=True),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("component_id", sa.String(length=128), nullable=False),
        sa.Column("hardware_model", sa.String(length=128), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_feature_log_device_id", "feature_log", ["device_id"])
    op.create_index("ix_feature_log_collected_at", "feature_log", ["collected_at"])
    op.create_index("ix_feature_log_component_day", "feature_log", ["component", "day"])
    op.create_table(
        "failure_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("component_id", sa.String(length=128), nullable=False),
        sa.Column("on_day", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("device_id", "component", "component_id", "on_day", "outcome"),
    )
    op.create_index("ix_failure_reports_device_id", "failure_reports", ["device_id"])


def downgrade() -> None:
    op.drop_table("failure_reports")
    op.drop_table("feature_log")

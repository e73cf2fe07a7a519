"""Alembic environment: runs on the connection handed over by ``fleetpulse.alerts.store.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from fleetpulse.alerts.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as own:
        context.configure(connection=own, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()

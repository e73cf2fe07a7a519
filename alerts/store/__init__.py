"""Ticket store: SQLite by default, PostgreSQL in production; schema managed by alembic migrations."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_UPGRADE_LOCK = threading.Lock()
MIGRATION_LOCK = 0x666C7470  # "fltp": the PostgreSQL advisory lock serialising schema upgrades
PENDING_LOGINS_LOCK = 0x666C706C  # "flpl": the one serialising starts of single sign-on logins


LIBPQ_SCHEMES = ("postgresql", "postgres")
"""A libpq URI's schemes (``postgresql://user:password@host/db``, as CloudNativePG's app Secret holds it):
served by psycopg 3, the PostgreSQL driver fleetpulse ships (SQLAlchemy would pick the absent psycopg2)."""


def store_url(url: str) -> URL:
    """``url`` parsed, a libpq URI given the psycopg driver; any other URL as written."""
    parsed = make_url(url)
    if parsed.drivername in LIBPQ_SCHEMES:
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for the store URL; SQLite gets its folder created, WAL and foreign keys on."""
    parsed = store_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent: a current database is left as it is)."""
    cfg = alembic_config(engine)
    with _UPGRADE_LOCK:  # alembic's command API keeps module globals: one upgrade per process at a time
        _upgrade(engine, cfg, revision)


def _upgrade(engine: Engine, cfg: Config, revision: str) -> None:
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(max(level, logging.WARNING))  # its per-run INFO chatter drowns the service logs
    try:
        with engine.begin() as connection:
            # several processes starting at once: one migrates, the others wait and then find it done
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            elif engine.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, and the DDL inside one transaction
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        alembic_log.setLevel(level)

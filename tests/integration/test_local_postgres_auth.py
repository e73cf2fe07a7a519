"""The local stack's PostgreSQL asks for its password: on a shared machine, a server trusting every
connection on 127.0.0.1 lets any local user in as superuser, and on to the postgres account's shell
(``COPY ... FROM PROGRAM``)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fleetpulse.alerts.store.repository import TicketStore
from tests.harness import PORTS, STATE

pytestmark = [pytest.mark.integration]


def test_attack_another_local_user_without_the_password_is_refused(postgres_url: str) -> None:
    for password in (None, "guess"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1",
                port=PORTS["postgres"],
                user="fleetpulse",
                dbname="fleetpulse",
                password=password,
                connect_timeout=10,
            )
    password_file = STATE / "postgres" / "password"
    assert password_file.stat().st_mode & 0o077 == 0
    url = make_url(postgres_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_operators_libpq_uri_opens_the_ticket_store(postgres_url: str) -> None:
    """Kubernetes mounts CloudNativePG's own ``uri`` (``postgresql://``, no driver) as the store URL: it reaches
    the real server through psycopg 3, migrations and all."""
    libpq_uri = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert libpq_uri.startswith("postgresql://fleetpulse:")
    store = TicketStore.open(libpq_uri)
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert store.count_tickets() >= 0
    finally:
        store.close()

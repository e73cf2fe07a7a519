"""Schemathesis fuzzes every operation of the published OpenAPI spec: no input may cause a server error.

Runs as each role (admin for full reach, it_support for the read-only paths) against the app
with a populated SQLite store; examples are bounded so the run takes well under a minute. The
populated store is built by a fixture in the test's temporary folder: collecting (or merely
importing) this module writes nothing.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert, make_inventory
from tests.unit.test_tickets_api import PASSWORD, api_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def _spec() -> dict[str, Any]:
    """The published spec, from an app over an empty in-memory store (nothing is written)."""
    spec: dict[str, Any] = create_app(api_settings("sqlite://")).openapi()
    return spec


schema = schemathesis.openapi.from_dict(_spec())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The app under test, over a populated SQLite store in the test's temporary folder."""
    settings = api_settings(f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'tickets.db'}")
    store = TicketStore.open(settings.store_url)
    svc = TicketService(store, settings)
    for n in range(8):
        svc.apply_inventory(make_inventory(f"pc-{n}"))
        svc.apply_alert(make_alert(f"pc-{n}", risk=0.5 + n / 20), NOW)
    return create_app(settings, store)


@pytest.fixture(autouse=True)
def _tolerate_urllib3_future(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3-future (pulled in by another package here) replaces urllib3's pool dict, which
    schemathesis' "resend on dropped keep-alive" bookkeeping iterates; ASGI calls never drop
    connections, so counting them is moot."""
    import schemathesis.transport.requests as transport

    monkeypatch.setattr(transport, "_count_opened_connections", lambda session: 0, raising=False)


@schema.parametrize()
@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
def test_no_server_error_for_any_input(case: schemathesis.Case, api: FastAPI) -> None:
    for user in ("root", "it"):
        case.call_and_validate(
            app=api,
            headers=_basic(user),
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )

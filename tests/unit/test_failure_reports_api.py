"""Failure reports (labels no ticket produced): scope, CSRF, validation and the audit record, through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret
from fleetpulse.alerts.fleetlog import FleetLog
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_inventory, store_url

__all__ = ["store_url"]  # fixture
PASSWORD = "correct horse battery staple"
USERS = [
    {"name": "fm", "role": "fleet_manager"},
    {"name": "fm-library", "role": "fleet_manager", "sites": ["Library"]},
    {"name": "it", "role": "it_support"},
]
REPORT = {"device_id": "pc-1", "component": "disk", "component_id": "s1", "outcome": "failed", "note": "dead"}


@pytest.fixture
def setup(store_url: str) -> Iterator[tuple[TestClient, TicketStore]]:
    settings = AlertSettings.model_validate(
        {
            "store_url": store_url,
            "api": {
                "users": [u | {"password_hash": hash_secret(PASSWORD)} for u in USERS],
                "local_login": True,
                "session": {"cookie_secure": False},
            },
        }
    )
    store = TicketStore.open(settings.store_url)
    svc = TicketService(store, settings)
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall", department="Finance"))
    svc.apply_inventory(make_inventory("pc-2", site="Library", department="Culture"))
    with TestClient(create_app(settings, store)) as client:
        yield client, store
    store.close()


def day(days_ago: int = 3) -> str:
    return (NOW.date() - timedelta(days=days_ago)).isoformat()


def test_fleet_manager_records_a_missed_failure_once_and_it_is_audited(setup: tuple[TestClient, TicketStore]) -> None:
    client, store = setup
    body = REPORT | {"on_day": day()}
    answer = client.post("/api/v1/failure-reports", json=body, auth=("fm", PASSWORD))
    assert answer.status_code == 201, answer.text
    assert answer.json()["outcome"] == "failed"
    assert client.post("/api/v1/failure-reports", json=body, auth=("fm", PASSWORD)).status_code == 409
    (record,) = store.audit.records(kind="label.failure_report")
    assert record.actor_name == "fm"
    assert record.payload["device_id"] == "pc-1"
    assert [o.kind for o in FleetLog(store).outcomes()] == ["failure"]


def test_scope_roles_and_validation_are_enforced(setup: tuple[TestClient, TicketStore]) -> None:
    client, store = setup
    body = REPORT | {"on_day": day()}
    # another site's device is "not found", exactly like an unknown one
    assert client.post("/api/v1/failure-reports", json=body, auth=("fm-library", PASSWORD)).status_code == 404
    unknown = body | {"device_id": "pc-404"}
    assert client.post("/api/v1/failure-reports", json=unknown, auth=("fm", PASSWORD)).status_code == 404
    assert client.post("/api/v1/failure-reports", json=body, auth=("it", PASSWORD)).status_code == 403
    future = body | {"on_day": (NOW.date() + timedelta(days=400)).isoformat()}
    assert client.post("/api/v1/failure-reports", json=future, auth=("fm", PASSWORD)).status_code == 422
    for bad in ({"outcome": "exploded"}, {"component": "toaster"}, {"device_id": "../etc"}, {"extra": 1}):
        assert client.post("/api/v1/failure-reports", json=body | bad, auth=("fm", PASSWORD)).status_code == 422
    form = client.post(
        "/api/v1/failure-reports",
        content="device_id=pc-1&component=disk&on_day=2026-10-01&outcome=failed",
        auth=("fm", PASSWORD),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415  # a cross-site form cannot post it
    assert FleetLog(store).outcomes() == []
    assert store.audit.records(kind="label.failure_report") == []


def test_page_form_needs_the_sessions_csrf_token(setup: tuple[TestClient, TicketStore]) -> None:
    client, store = setup
    login = client.get("/auth/login", headers={"Accept": "text/html"}).text
    token = login.split('name="csrf" value="')[1].split('"')[0]
    done = client.post(
        "/auth/login", data={"username": "fm", "password": PASSWORD, "next": "/", "csrf": token}, follow_redirects=False
    )
    assert done.status_code == 303
    page = client.get("/", headers={"Accept": "text/html"}).text
    assert 'id="failure-report"' in page
    csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
    body = REPORT | {"on_day": day()}
    assert client.post("/api/v1/failure-reports", json=body).status_code == 403  # the cookie alone: refused
    forged = client.post("/api/v1/failure-reports", json=body, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    assert FleetLog(store).outcomes() == []
    ok = client.post("/api/v1/failure-reports", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text

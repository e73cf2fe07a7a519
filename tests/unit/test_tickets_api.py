"""The ticket API through FastAPI's TestClient: roles on every route, validation, CSRF guard, CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret, token_sha256, verify_secret
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert, make_inventory, store_url

__all__ = ["store_url"]  # fixture

USERS = {"fm": "fleet_manager", "it": "it_support", "root": "admin"}
PASSWORD = "correct horse battery staple"
TOKEN = "tok-0123456789abcdef"
HASH = hash_secret(PASSWORD)


def api_settings(store_url: str) -> AlertSettings:
    return AlertSettings.model_validate(
        {
            "store_url": store_url,
            "api": {
                "users": [{"name": n, "role": r, "password_hash": HASH} for n, r in USERS.items()],
                "tokens": [
                    {"name": "itsm-bot", "role": "it_support", "token_sha256": token_sha256(TOKEN), "sites": ["*"]}
                ],
                "local_login": True,  # API clients here use HTTP basic
                "session": {"cookie_secure": False},
            },
        }
    )


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    """The app on SQLite, and on PostgreSQL when integration tests run."""
    settings = api_settings(store_url)
    store = TicketStore.open(settings.store_url)
    svc = TicketService(store, settings)
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall", department="Finance"))
    svc.apply_inventory(make_inventory("pc-2", site="Library", department="Culture", model="=HYPERLINK(evil)"))
    svc.apply_alert(make_alert("pc-1", risk=0.6, days_to_failure=80, days_to_failure_low=50), NOW)
    svc.apply_alert(make_alert("pc-2", risk=0.95), NOW)
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client
    store.close()


def auth(user: str) -> tuple[str, str]:
    return (user, PASSWORD)


def test_password_hashes_verify_and_reject() -> None:
    assert verify_secret(PASSWORD, HASH)
    assert not verify_secret("wrong", HASH)
    assert not verify_secret(PASSWORD, "md5$1$00$00")
    assert not verify_secret(PASSWORD, "garbage")


def all_routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        if hasattr(route, "original_router"):  # an included router (the web pages)
            yield from all_routes(route.original_router.routes)
        else:
            yield route


def test_no_route_answers_without_credentials(client: TestClient) -> None:
    """Walk every route the app has (API, pages, spec); all but /healthz, login pages and static files say 401
    to an anonymous caller, with a bearer challenge (a basic one would make browsers show their pop-up)."""
    paths = set()
    for route in all_routes(client.app.routes):  # type: ignore[attr-defined]
        path = route.path.replace("{ticket_id}", "1").replace("{device_id}", "pc-1").replace("{name}", "app.js")
        paths.add(route.path)
        if route.path == "/healthz" or route.path.startswith(("/auth/", "/static/")):
            continue
        for method in route.methods:
            response = client.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert {"/", "/devices/{device_id}", "/static/{name}", "/openapi.json", "/api/v1/tickets"} <= paths
    assert not paths & {"/docs", "/redoc"}
    assert client.get("/openapi.json", auth=auth("it")).json()["info"]["title"] == "fleetpulse tickets"


@pytest.mark.parametrize("credentials", [("fm", "wrong"), ("nobody", PASSWORD), ("", ""), ("fm", PASSWORD + "\x00")])
def test_wrong_credentials_are_refused(client: TestClient, credentials: tuple[str, str]) -> None:
    assert client.get("/api/v1/tickets", auth=credentials).status_code == 401


def test_bad_token_and_malformed_headers_are_refused(client: TestClient) -> None:
    for header in ("Bearer nope", "Basic !!!notbase64", "Basic " + "A" * 5000, "Digest x", "Bearer"):
        assert client.get("/api/v1/tickets", headers={"Authorization": header}).status_code == 401


def test_queue_is_sorted_by_urgency_and_filterable(client: TestClient) -> None:
    page = client.get("/api/v1/tickets", auth=auth("it")).json()
    assert page["total"] == 2
    assert [t["device_id"] for t in page["items"]] == ["pc-2", "pc-1"]
    assert page["items"][0]["urgency"] == "critical"
    only = client.get("/api/v1/tickets", params={"site": "Town Hall"}, auth=auth("it")).json()
    assert [t["device_id"] for t in only["items"]] == ["pc-1"]
    assert client.get("/api/v1/tickets", params={"component": "battery"}, auth=auth("it")).json()["total"] == 0
    assert client.get("/api/v1/tickets", params={"component": "gpu"}, auth=auth("it")).status_code == 422
    assert client.get("/api/v1/tickets", params={"limit": 0}, auth=auth("it")).status_code == 422


def test_it_support_reads_but_cannot_change(client: TestClient) -> None:
    assert client.get("/api/v1/tickets/1", auth=auth("it")).status_code == 200
    response = client.post("/api/v1/tickets/1/transition", json={"to": "approved"}, auth=auth("it"))
    assert response.status_code == 403
    response = client.post(
        "/api/v1/tickets/1/transition", json={"to": "approved"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 403
    assert client.get("/api/v1/outbox", auth=auth("it")).status_code == 403
    assert client.get("/api/v1/outbox", auth=auth("fm")).status_code == 403
    assert client.get("/api/v1/outbox", auth=auth("root")).status_code == 200
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {TOKEN}"}).json() == {
        "name": "itsm-bot",
        "role": "it_support",
        "sites": ["*"],
        "departments": [],
    }


def test_fleet_manager_moves_tickets_and_is_recorded(client: TestClient) -> None:
    response = client.post(
        "/api/v1/tickets/bulk-transition", json={"ticket_ids": [1, 2], "to": "approved"}, auth=auth("fm")
    )
    assert response.status_code == 200
    assert {t["state"] for t in response.json()} == {"approved"}
    response = client.post("/api/v1/tickets/1/transition", json={"to": "done"}, auth=auth("fm"))
    assert response.status_code == 409
    assert "cannot go from 'approved' to 'done'" in response.json()["detail"]
    response = client.post(
        "/api/v1/tickets/2/transition",
        json={"to": "dismissed", "outcome": "false_alarm", "note": "fine"},
        auth=auth("fm"),
    )
    assert response.status_code == 200
    events = client.get("/api/v1/tickets/2", auth=auth("fm")).json()["events"]
    assert [(e["actor"], e["to_state"]) for e in events if e["kind"] == "transition"] == [
        ("fm", "approved"),
        ("fm", "dismissed"),
    ]
    outbox = client.get("/api/v1/outbox", auth=auth("root")).json()
    assert [(o["target"], o["payload"]["outcome"]) for o in outbox] == [("labels", "false_alarm")]


@pytest.mark.parametrize(
    "body",
    [
        {"to": "approved", "extra": 1},
        {"to": "flying"},
        {"to": "approved", "note": "x" * 1001},
        {"to": "done", "outcome": "maybe"},
        {},
    ],
)
def test_invalid_bodies_are_422(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/api/v1/tickets/1/transition", json=body, auth=auth("fm")).status_code == 422


def test_missing_things_are_404(client: TestClient) -> None:
    assert client.get("/api/v1/tickets/999", auth=auth("fm")).status_code == 404
    assert client.post("/api/v1/tickets/999/transition", json={"to": "approved"}, auth=auth("fm")).status_code == 404
    assert client.get("/api/v1/devices/pc-404", auth=auth("fm")).status_code == 404
    assert client.get("/devices/pc-404", auth=auth("fm")).status_code == 404
    assert client.get("/api/v1/devices/..%2F..%2Fetc", auth=auth("fm")).status_code in (404, 422)
    assert client.get("/static/../pages.py", auth=auth("fm")).status_code == 404


def test_writes_need_a_json_body_so_forms_from_other_sites_cannot_post(client: TestClient) -> None:
    response = client.post(
        "/api/v1/tickets/bulk-transition",
        content="ticket_ids=1&to=approved",
        auth=auth("fm"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert client.get("/api/v1/tickets/1", auth=auth("fm")).json()["ticket"]["state"] == "open"


def test_csv_export_is_filtered_and_safe_for_spreadsheets(client: TestClient) -> None:
    response = client.get("/api/v1/tickets.csv", auth=auth("it"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["device_id"] for r in rows] == ["pc-2", "pc-1"]
    assert rows[0]["device_model"] == "'=HYPERLINK(evil)"
    filtered = client.get("/api/v1/tickets.csv", params={"department": "Finance"}, auth=auth("it")).text
    assert len(list(csv.DictReader(io.StringIO(filtered)))) == 1


def test_pages_render_for_readers_with_security_headers(client: TestClient) -> None:
    page = client.get("/", auth=auth("it"))
    assert page.status_code == 200
    assert "pc-2" in page.text
    assert "bulk-approve" not in page.text  # read-only role gets no approve button
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "bulk-approve" in client.get("/", auth=auth("fm")).text
    device = client.get("/devices/pc-2", auth=auth("fm"))
    assert device.status_code == 200
    assert "<svg" in device.text
    assert "Library" in device.text
    assert "<script>alert" not in client.get("/", params={"site": "<script>alert(1)</script>"}, auth=auth("fm")).text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert "Showing the 1 most urgent of 2 tickets" in client.get("/", params={"limit": 1}, auth=auth("it")).text


def test_unreachable_store_answers_503_not_500(tmp_path: Path) -> None:
    settings = api_settings(f"sqlite:///{tmp_path}/t.db")
    store = TicketStore.open(settings.store_url)
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as test_client:
        assert test_client.get("/healthz").status_code == 200
        (tmp_path / "t.db").unlink()
        (tmp_path / "t.db").mkdir()  # the file is gone and cannot be re-created: every query fails
        store.engine.dispose()
        assert test_client.get("/healthz").status_code == 503
        response = test_client.get("/api/v1/tickets", auth=auth("fm"))
        assert response.status_code == 503
        assert response.json() == {"detail": "ticket store unavailable, retry later"}
    store.close()

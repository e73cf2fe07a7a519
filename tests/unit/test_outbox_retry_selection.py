"""Attack: ``POST /api/v1/outbox/retry {"ids": []}`` rescheduled every pending delivery (an empty list read as
"all") while the audit trail recorded ``ids: []``: personal data went out to the ITSMs and the trail said
nothing was asked for. An explicit list, empty included, selects exactly those rows; only an absent ``ids``
means every pending row, and the trail records what was asked and what happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert, make_inventory
from tests.unit.test_tickets_api import HASH, auth

LATER = NOW + timedelta(days=1)
"""Where every pending row waits before the admin asks for a retry."""
RETRY_AT = NOW + timedelta(hours=1)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, TicketStore]]:
    """Three tickets with a pending message each to the webhook ``hook``, all waiting until ``LATER``."""
    settings = AlertSettings.model_validate(
        {
            "store_url": f"sqlite:///{tmp_path}/tickets.db",
            "connectors": [{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}],
            "api": {
                "users": [{"name": "root", "role": "admin", "password_hash": HASH}],
                "local_login": True,
                "session": {"cookie_secure": False},
            },
        }
    )
    store = TicketStore.open(settings.store_url)
    service = TicketService(store, settings)
    for device in ("pc-1", "pc-2", "pc-3"):
        service.apply_inventory(make_inventory(device))
        service.apply_alert(make_alert(device), NOW)
    store.defer_target("hook", LATER)
    with TestClient(create_app(settings, store, clock=lambda: RETRY_AT)) as client:
        yield client, store
    store.close()


def due(store: TicketStore) -> list[int]:
    """The pending rows the retry made due."""
    return sorted(r.id for r in store.outbox(pending_only=True) if r.next_attempt_at == RETRY_AT)


def retry_audit(store: TicketStore) -> object:
    return [r.payload for r in store.audit.records() if r.kind == "outbox.retry"][-1]


def test_attack_an_empty_id_list_reschedules_nothing(app: tuple[TestClient, TicketStore]) -> None:
    client, store = app
    response = client.post("/api/v1/outbox/retry", json={"ids": []}, auth=auth("root"))
    assert response.status_code == 200
    assert response.json() == {"rescheduled": 0}
    assert due(store) == []
    assert {r.next_attempt_at for r in store.outbox(pending_only=True)} == {LATER}
    assert retry_audit(store) == {"ids": [], "rescheduled": 0}


def test_named_rows_and_all_pending_are_rescheduled_as_asked(app: tuple[TestClient, TicketStore]) -> None:
    client, store = app
    pending = sorted(r.id for r in store.outbox(pending_only=True))
    assert len(pending) == 3
    assert client.post("/api/v1/outbox/retry", json={"ids": pending[:1]}, auth=auth("root")).json() == {
        "rescheduled": 1
    }
    assert due(store) == pending[:1]
    assert retry_audit(store) == {"ids": pending[:1], "rescheduled": 1}
    assert client.post("/api/v1/outbox/retry", json={}, auth=auth("root")).json() == {"rescheduled": 3}
    assert due(store) == pending
    assert retry_audit(store) == {"ids": "all pending", "rescheduled": 3}


def test_the_store_selects_no_row_for_an_empty_list_and_every_pending_row_for_none(tmp_path: Path) -> None:
    """The store itself, for any caller: ``[]`` selects no row, ``None`` every pending one."""
    store = TicketStore.open(f"sqlite:///{tmp_path}/tickets.db")
    try:
        service = TicketService(
            store,
            AlertSettings.model_validate(
                {"connectors": [{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"}]}
            ),
        )
        service.apply_alert(make_alert("pc-1"), NOW)
        assert store.retry_now(RETRY_AT, []) == 0
        assert store.retry_now(RETRY_AT, None) == 1
    finally:
        store.close()

"""Attack: two people move the same ticket at the same moment. Both used to pass the lifecycle check, so two
closes crashed the second request (HTTP 500 on the label's unique outbox row) and two approvals both
succeeded, the history showing the move twice. Now the second waits for the first, sees the new state and is
refused with 409; exactly one move is recorded.

Runs on SQLite here; tests/integration/test_store_limits_postgres.py runs the same attacks on PostgreSQL.
A pause inside the first request's transaction, after its lifecycle check, holds the window open.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.store.models import OutboxRow, TicketEvent
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import LABELS_TARGET, TicketService
from tests.alerts_support import NOW, make_alert, make_inventory
from tests.unit.test_tickets_api import api_settings, auth

PAUSE_S = 0.5
"""How long the first move holds its transaction open after its lifecycle check."""
Answer = tuple[int, str]


def open_app(store_url: str) -> tuple[TestClient, TicketStore]:
    """Tickets 1 (pc-1) and 2 (pc-2), both open."""
    settings = api_settings(store_url)
    store = TicketStore.open(settings.store_url)
    service = TicketService(store, settings)
    for device in ("pc-1", "pc-2"):
        service.apply_inventory(make_inventory(device))
        service.apply_alert(make_alert(device), NOW)
    return TestClient(create_app(settings, store), raise_server_exceptions=False), store


@pytest.fixture
def slow_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each move pauses inside its transaction once its lifecycle check passed and its event is written."""
    event = TicketService._event

    def paused(session: Session, ticket_id: int, at: datetime, kind: str, note: str, *args: Any, **kw: Any) -> None:
        event(session, ticket_id, at, kind, note, *args, **kw)
        if kind == "transition":
            session.flush()
            time.sleep(PAUSE_S)

    monkeypatch.setattr(TicketService, "_event", staticmethod(paused))


def race(client: TestClient, path: str, first: dict[str, Any], second: dict[str, Any]) -> list[Answer]:
    """Two fleet managers send their moves, the second while the first is inside its transaction."""
    answers: dict[int, Answer] = {}

    def send(n: int, body: dict[str, Any]) -> None:
        with TestClient(client.app, raise_server_exceptions=False) as own:
            response = own.post(path, json=body, auth=auth("fm"))
            answers[n] = (response.status_code, response.text)

    threads = [threading.Thread(target=send, args=(n, body)) for n, body in enumerate((first, second))]
    threads[0].start()
    time.sleep(PAUSE_S / 3)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=60)
    return [answers[0], answers[1]]


def transitions(store: TicketStore, ticket_id: int) -> list[tuple[str | None, str | None]]:
    return [(e.from_state, e.to_state) for e in store.ticket_events(ticket_id) if e.kind == "transition"]


def one_won(answers: list[Answer]) -> None:
    assert sorted(status for status, _ in answers) == [200, 409], answers
    (refusal,) = [text for status, text in answers if status == 409]
    assert "cannot go from" in refusal


def attack_concurrent_closes(store_url: str) -> None:
    client, store = open_app(store_url)
    try:
        answers = race(
            client,
            "/api/v1/tickets/1/transition",
            {"to": "dismissed", "outcome": "false_alarm"},
            {"to": "dismissed", "outcome": "no_fault_found"},
        )
        one_won(answers)
        assert transitions(store, 1) == [("open", "dismissed")]
        with store.session() as session:
            labels = session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.dedup_key == "outcome-1")
            )
        assert labels == 1
    finally:
        store.close()


def attack_concurrent_approvals(store_url: str) -> None:
    client, store = open_app(store_url)
    try:
        one_won(race(client, "/api/v1/tickets/2/transition", {"to": "approved"}, {"to": "approved"}))
        assert transitions(store, 2) == [("open", "approved")]
    finally:
        store.close()


def attack_crossing_bulk_moves(store_url: str) -> None:
    """Two bulk moves naming the same tickets in opposite order: one wins whole, neither deadlocks (503)."""
    client, store = open_app(store_url)
    try:
        answers = race(
            client,
            "/api/v1/tickets/bulk-transition",
            {"ticket_ids": [1, 2], "to": "approved"},
            {"ticket_ids": [2, 1], "to": "approved"},
        )
        one_won(answers)
        assert transitions(store, 1) == transitions(store, 2) == [("open", "approved")]
    finally:
        store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tickets.db"


def test_attack_concurrent_closes_one_wins_the_other_is_409(slow_moves: None, sqlite_url: str) -> None:
    attack_concurrent_closes(sqlite_url)


def test_attack_concurrent_approvals_record_one_move(slow_moves: None, sqlite_url: str) -> None:
    attack_concurrent_approvals(sqlite_url)


def test_attack_crossing_bulk_moves_one_wins_whole(slow_moves: None, sqlite_url: str) -> None:
    attack_crossing_bulk_moves(sqlite_url)


def test_a_write_the_locks_do_not_cover_is_a_409_not_a_500(sqlite_url: str) -> None:
    """The closing label's outbox row already exists (written by a writer outside the lifecycle): the unique
    row refuses the second one, the move is a conflict, and nothing of it is kept."""
    client, store = open_app(sqlite_url)
    try:
        with store.session() as session:
            TicketService._enqueue(session, LABELS_TARGET, "outcome-1", "outcome", {}, NOW)
        response = client.post(
            "/api/v1/tickets/1/transition", json={"to": "dismissed", "outcome": "false_alarm"}, auth=auth("fm")
        )
        assert response.status_code == 409, response.text
        assert "changed at the same time" in response.json()["detail"]
        assert store.get_ticket(1).state.value == "open"  # type: ignore[union-attr]
        with store.session() as session:
            events = session.scalar(select(func.count()).select_from(TicketEvent).where(TicketEvent.ticket_id == 1))
        assert events == 1  # "opened" only
    finally:
        store.close()

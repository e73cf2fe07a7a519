"""Ticket store and rules on SQLite and on the real PostgreSQL: same behaviour on both."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.store import alembic_config, make_engine, upgrade
from fleetpulse.alerts.store.models import TicketRow
from fleetpulse.alerts.store.repository import TicketFilter, TicketStore
from fleetpulse.alerts.store.sessions import StoredPendingLogin, WebSessions
from fleetpulse.alerts.tickets import TransitionError
from fleetpulse.contract.v1 import AlertState, Component, RiskScore, TicketOutcome, TicketState
from tests.alerts_support import NOW, T0, make_alert, make_inventory, service, store, store_url
from tests.unit.test_tickets_api import PASSWORD, api_settings

__all__ = ["store", "store_url"]  # fixtures
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migrations_are_idempotent_and_create_every_table(store: TicketStore) -> None:
    upgrade(store.engine)
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "tickets",
        "ticket_events",
        "alerts_seen",
        "devices",
        "outbox",
        "storm_groups",
        "risk_history",
        "login_failures",
        "api_password_upgrades",
        "audit_log",
        "audit_head",
    } <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD


def test_one_open_ticket_per_component_and_replays_change_nothing(store: TicketStore) -> None:
    svc = service(store, connectors=[{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x"}])
    svc.apply_inventory(make_inventory())
    assert svc.apply_alert(make_alert(i=1), NOW) == "opened"
    assert svc.apply_alert(make_alert(i=1), NOW) == "duplicate"
    assert svc.apply_alert(make_alert(i=2, risk=0.97), NOW) == "updated"
    assert svc.apply_alert(make_alert(i=3, component_id="sn2", alert_id="x:sn2"), NOW) == "opened"
    tickets = store.list_tickets()
    assert [(t.component_id, t.risk) for t in tickets] == [("sn1", 0.97), ("sn2", 0.8)]
    assert tickets[0].urgency == "critical"
    assert tickets[0].site == "Town Hall"
    assert tickets[0].device_model == "ThinkPad T14 Gen 2"
    assert tickets[0].evidence[0].feature == "reallocated_sectors"
    # one outbox row per new ticket per connector, none for the update
    assert sorted(r.dedup_key for r in store.outbox()) == ["fleetpulse-ticket-1", "fleetpulse-ticket-2"]


def test_database_refuses_a_second_open_ticket_even_without_the_service(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert(), NOW)
    row = store.list_tickets()[0]
    clone = TicketRow(
        **{c: getattr(row, c) for c in ("device_id", "component_id", "urgency", "risk", "model_name")},
        component=row.component.value,
        model_version="x",
        state="open",
        urgency_rank=1,
        open_key="pc-0001|disk|sn1",
        evidence=[],
        action_kind="repair",
        recommended_action="x",
        storm_key="k",
        last_alert_id="y",
        opened_at=row.opened_at,
        updated_at=row.updated_at,
    )

    def insert() -> None:
        with store.session() as session:
            session.add(clone)

    with pytest.raises(IntegrityError):
        insert()


def test_cleared_alert_is_recorded_on_the_ticket_not_deleted(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert(), NOW)
    cleared = make_alert(i=5, alert_id="c1", state=AlertState.CLEARED, risk=0.1)
    assert svc.apply_alert(cleared, NOW) == "cleared"
    ticket = store.list_tickets()[0]
    assert ticket.state is TicketState.OPEN
    assert ticket.alert_cleared_at == cleared.at
    assert "ticket kept for review" in store.ticket_events(ticket.id)[-1].note
    assert svc.apply_alert(make_alert("pc-0404", alert_id="c2", state=AlertState.CLEARED), NOW) == (
        "cleared_without_ticket"
    )


def test_lifecycle_records_who_and_when_and_publishes_outcomes(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.apply_alert(make_alert("pc-2"), NOW)
    later = NOW + timedelta(hours=3)
    svc.transition([1, 2], TicketState.APPROVED, "alice", NOW, note="batch")
    svc.transition([1], TicketState.ORDERED, "alice", later)
    svc.transition([1], TicketState.DONE, "bob", later, outcome="confirmed_fault")
    svc.transition(
        [2], TicketState.DISMISSED, "carol", later, note="user replaced it already", outcome="no_fault_found"
    )
    events = store.ticket_events(1)
    transitions = [(e.actor, e.from_state, e.to_state, e.at) for e in events if e.kind == "transition"]
    assert transitions == [
        ("alice", "open", "approved", NOW),
        ("alice", "approved", "ordered", later),
        ("bob", "ordered", "done", later),
    ]
    labels = sorted((r for r in store.outbox() if r.target == "labels"), key=lambda r: r.id)
    outcomes = [TicketOutcome.model_validate(r.payload) for r in labels]
    assert [(o.ticket_id, o.outcome, o.recorded_by) for o in outcomes] == [
        (1, "confirmed_fault", "bob"),
        (2, "no_fault_found", "carol"),
    ]
    # closed tickets free the component: a new raise opens a new ticket
    assert store.open_tickets() == []
    assert svc.apply_alert(make_alert("pc-1", i=9, alert_id="again"), NOW) == "opened"


@pytest.mark.parametrize(
    ("path", "to", "outcome"),
    [
        ([], TicketState.DONE, None),
        ([], TicketState.ORDERED, None),
        ([TicketState.APPROVED], TicketState.APPROVED, None),
        ([], TicketState.APPROVED, "false_alarm"),
        ([], TicketState.DISMISSED, "confirmed_fault"),
        ([TicketState.DISMISSED], TicketState.OPEN, None),
    ],
)
def test_invalid_transitions_change_nothing(
    store: TicketStore, path: list[TicketState], to: TicketState, outcome: str | None
) -> None:
    svc = service(store)
    svc.apply_alert(make_alert(), NOW)
    for step in path:
        svc.transition([1], step, "alice", NOW)
    before = store.ticket_events(1)
    with pytest.raises(TransitionError):
        svc.transition([1], to, "alice", NOW, outcome=outcome)  # type: ignore[arg-type]
    assert store.ticket_events(1) == before


def test_bulk_transition_is_all_or_nothing(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.apply_alert(make_alert("pc-2"), NOW)
    svc.transition([2], TicketState.DISMISSED, "alice", NOW)
    with pytest.raises(TransitionError):
        svc.transition([1, 2], TicketState.APPROVED, "alice", NOW)
    assert store.get_ticket(1).state is TicketState.OPEN  # type: ignore[union-attr]
    with pytest.raises(TransitionError, match="not found"):
        svc.transition([1, 99], TicketState.APPROVED, "alice", NOW)


def test_storm_groups_a_fleet_wide_spike_into_one_problem(store: TicketStore) -> None:
    svc = service(
        store,
        storm={"window": "PT1H", "threshold": 5},
        connectors=[{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x"}],
    )
    for n in range(40):
        svc.apply_inventory(make_inventory(f"pc-{n:03d}", model="EliteBook 840 G8"))
        svc.apply_alert(make_alert(f"pc-{n:03d}", i=n % 50), NOW)
    svc.apply_inventory(make_inventory("other", model="Latitude 5420"))
    svc.apply_alert(make_alert("other"), NOW)
    storms = store.storms()
    assert len(storms) == 1
    assert storms[0].member_count == 40
    assert storms[0].cause == "reallocated_sectors"
    assert storms[0].device_model == "EliteBook 840 G8"
    grouped = store.list_tickets(TicketFilter(storm_group=storms[0].group_id), limit=100)
    assert len(grouped) == 40
    assert all(t.recommended_action.startswith("Fleet-wide problem: rule out the common cause") for t in grouped)
    outbox = store.outbox()
    # 4 single tickets before the threshold was reached, 1 grouped problem, 1 unrelated ticket: not 41
    assert sorted(r.subject for r in outbox) == ["storm"] + ["ticket"] * 5
    assert store.get_ticket(41).storm_group is None  # type: ignore[union-attr]


def test_inventory_replays_never_overwrite_newer_facts(store: TicketStore) -> None:
    svc = service(store)
    assert svc.apply_inventory(make_inventory(site="New Site", updated_at=T0 + timedelta(days=1)))
    assert not svc.apply_inventory(make_inventory(site="Old Site"))
    assert store.get_device("pc-0001").site == "New Site"  # type: ignore[union-attr]
    svc.apply_inventory(make_inventory(warranty_end=date(2030, 1, 1), updated_at=T0 + timedelta(days=2)))
    svc.apply_alert(make_alert(), NOW)
    assert store.list_tickets()[0].action_kind == "warranty_claim"


def test_history_is_downsampled_per_component(store: TicketStore) -> None:
    svc = service(store, consumer={"history_min_interval": "PT1H"})
    kept = 0
    for minutes in range(0, 180, 10):
        score = RiskScore(
            device_id="pc-0001",
            component=Component.BATTERY,
            risk=min(1.0, minutes / 200),
            model_name="m",
            model_version="1",
            report_seq=minutes,
            collected_at=T0 + timedelta(minutes=minutes),
            scored_at=T0 + timedelta(minutes=minutes),
        )
        kept += svc.record_score(score)
    assert kept == 3
    points = store.history("pc-0001")
    assert [p.at - T0 for p in points] == [timedelta(0), timedelta(hours=1), timedelta(hours=2)]
    assert svc.prune_history(NOW + timedelta(days=365)) == 3


def test_late_inventory_replans_open_tickets_only(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert("pc-1", component=Component.BATTERY), NOW)
    svc.apply_alert(make_alert("pc-2", component=Component.BATTERY), NOW)
    assert {t.action_kind for t in store.list_tickets()} == {"diagnose"}  # no facts: nothing assumed
    svc.transition([2], TicketState.APPROVED, "alice", NOW)
    applied = svc.apply_inventories(
        [make_inventory("pc-1", warranty_end=date(2030, 1, 1)), make_inventory("pc-2"), make_inventory("pc-2")]
    )
    assert applied == 2  # the duplicate pc-2 record in the same batch is stale
    by_device = {t.device_id: t for t in store.list_tickets()}
    assert by_device["pc-1"].action_kind == "warranty_claim"
    assert by_device["pc-1"].co2e_avoided_kg > 0
    assert by_device["pc-2"].action_kind == "diagnose"  # approved: the decision stands


def test_history_batch_keeps_one_point_per_interval_per_component(store: TicketStore) -> None:
    svc = service(store, consumer={"history_min_interval": "PT6H"})
    scores = [
        RiskScore(
            device_id=f"pc-{d}",
            component=component,
            risk=0.1,
            model_name="m",
            model_version="1",
            report_seq=h,
            collected_at=T0 + timedelta(hours=h),
            scored_at=T0 + timedelta(hours=h),
        )
        for d in range(3)
        for component in (Component.DISK, Component.BATTERY)
        for h in reversed(range(24))  # out of order on purpose
    ]
    assert svc.record_scores(scores) == 3 * 2 * 4
    assert svc.record_scores(scores) == 0  # a replayed batch adds nothing


def test_concurrent_first_starts_migrate_once(store_url: str) -> None:
    """Several processes opening a fresh store at once (API + consumers): all succeed, the schema is made once."""
    import subprocess
    import sys

    code = "import sys; from fleetpulse.alerts.store import make_engine, upgrade; upgrade(make_engine(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url], stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    engine.dispose()


def test_migration_downgrades_and_upgrades_again(store: TicketStore) -> None:
    from alembic import command

    with store.engine.begin() as connection:
        cfg = alembic_config(store.engine)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "base")
    assert not {"tickets", "login_failures", "api_password_upgrades"} & set(inspect(store.engine).get_table_names())
    upgrade(store.engine)
    assert {"tickets", "login_failures", "api_password_upgrades"} <= set(inspect(store.engine).get_table_names())


def test_logins_pending_across_the_upgrade_to_0010_still_complete_and_count(store_url: str) -> None:
    """A login started before the upgrade has no source: it completes, and it counts toward the total only."""
    engine = make_engine(store_url)
    upgrade(engine, "0009")
    expires = (NOW + timedelta(days=1)).replace(tzinfo=None)  # naive: a day clear of any server time zone
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO pending_logins (id_sha256, state, nonce, code_verifier, next_path, expires_at) "
                "VALUES (:id, 's', 'n', 'v', '/', :at)"
            ),
            {"id": hashlib.sha256(b"old-login").hexdigest(), "at": expires},
        )
    engine.dispose()
    store = TicketStore.open(store_url)
    try:
        logins = WebSessions(store)
        later = StoredPendingLogin("s2", "n2", "v2", "/")
        assert not logins.start_login("new", later, NOW, NOW + timedelta(minutes=10), "source", 10, total=1)
        assert logins.take_login("old-login", NOW) == StoredPendingLogin("s", "n", "v", "/")
        assert logins.start_login("new", later, NOW, NOW + timedelta(minutes=10), "source", 10, total=1)
    finally:
        store.close()


def test_incidents_delivered_before_the_upgrade_to_0011_have_no_record_id(store_url: str) -> None:
    """An incident an older release delivered is updated through a lookup: it has a reference, no record id."""
    engine = make_engine(store_url)
    upgrade(engine, "0010")
    at = NOW.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (target, dedup_key, subject, payload, created_at, attempts, next_attempt_at, "
                "delivered_at, external_ref) VALUES ('snow', 'fleetpulse-ticket-1', 'ticket', :payload, :at, 1, :at, "
                ":at, 'INC0010001')"
            ),
            {"payload": '{"title": "[fleetpulse] high: disk"}', "at": at},
        )
    engine.dispose()
    store = TicketStore.open(store_url)
    try:
        assert store.incident_of("snow", "fleetpulse-ticket-1") == ("INC0010001", None, "[fleetpulse] high: disk")
    finally:
        store.close()


def test_queue_puts_cleared_alerts_after_still_alerting_ones_of_the_same_urgency(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert("pc-1", risk=0.99), NOW)
    svc.apply_alert(make_alert("pc-2", risk=0.95), NOW)
    svc.apply_alert(make_alert("pc-1", i=5, alert_id="c", state=AlertState.CLEARED, risk=0.05), NOW)
    assert [t.device_id for t in store.list_tickets()] == ["pc-2", "pc-1"]


def test_ticket_counts_carry_recorded_outcomes(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall"))
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.apply_alert(make_alert("pc-2"), NOW)
    svc.apply_alert(make_alert("pc-3"), NOW)
    svc.transition([1], TicketState.DISMISSED, "carol", NOW, outcome="false_alarm")
    svc.transition([2], TicketState.APPROVED, "alice", NOW)
    svc.transition([2], TicketState.ORDERED, "alice", NOW)
    svc.transition([2], TicketState.DONE, "bob", NOW, outcome="confirmed_fault")
    counts = sorted((c.state, c.outcome, c.site, c.count) for c in store.ticket_counts())
    assert counts == [
        ("dismissed", "false_alarm", "Town Hall", 1),
        ("done", "confirmed_fault", "unknown", 1),
        ("open", "pending", "unknown", 1),
    ]


def test_nul_in_text_is_refused_by_the_api_before_the_store(store: TicketStore) -> None:
    """PostgreSQL cannot store NUL in text: sent in a note, a component id or a filter, it was a failed
    write or query (500). The API refuses it (422) and the ticket is unchanged."""
    settings = api_settings(store.engine.url.render_as_string(hide_password=False))
    svc = service(store)
    svc.apply_inventory(make_inventory("pc-1"))
    svc.apply_alert(make_alert("pc-1"), NOW)
    client = TestClient(create_app(settings, store), raise_server_exceptions=False)
    fm = ("fm", PASSWORD)
    note = client.post("/api/v1/tickets/1/transition", json={"to": "approved", "note": "a\u0000b"}, auth=fm)
    report = {"device_id": "pc-1", "component": "disk", "component_id": "x\u0000", "on_day": "2026-10-01"}
    failure = client.post("/api/v1/failure-reports", json=report | {"outcome": "failed"}, auth=fm)
    listed = client.get("/api/v1/tickets", params={"site": "a\u0000"}, auth=fm)
    assert [note.status_code, failure.status_code, listed.status_code] == [422, 422, 422]
    assert client.get("/api/v1/tickets/1", auth=fm).json()["ticket"]["state"] == "open"

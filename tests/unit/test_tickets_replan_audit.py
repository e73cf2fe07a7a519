"""An inventory record re-plans an open ticket's recommended action ("replace the SSD" becomes "file a warranty
claim", or back): what a fleet manager approves must not change without a trace. Each change is one ticket event
with its audit record; an update that leaves the plan as it was records nothing.
"""

from __future__ import annotations

from datetime import date, timedelta

from fleetpulse.alerts.store.repository import TicketStore
from tests.alerts_support import NOW, make_alert, make_inventory, service, store, store_url

__all__ = ["store", "store_url"]  # fixtures: SQLite, and PostgreSQL when integration tests run


def test_a_replan_is_one_ticket_event_with_its_audit_record_and_an_unchanged_plan_none(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1)))  # expired when the alert comes
    svc.apply_alert(make_alert("pc-1"), NOW)
    opened = store.get_ticket(1)
    assert opened is not None
    assert opened.action_kind == "repair"
    events, records = len(store.ticket_events(1)), len(store.audit.records(limit=10_000))

    # new facts, same plan (the site moved): nothing to record
    assert svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1), site="Library", updated_at=NOW))
    assert len(store.ticket_events(1)) == events
    assert len(store.audit.records(limit=10_000)) == records

    # the warranty was extended: the plan turns into a warranty claim
    later = NOW + timedelta(hours=1)
    assert svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2030, 1, 1), updated_at=later))
    replanned = store.get_ticket(1)
    assert replanned is not None
    assert replanned.action_kind == "warranty_claim"
    new_events, new_records = store.ticket_events(1)[events:], store.audit.records(limit=10_000)[records:]
    assert [e.kind for e in new_events] == ["replanned"]
    assert [r.kind for r in new_records] == ["ticket.replanned"]
    event, record = new_events[0], new_records[0]
    assert (event.actor, event.at) == ("fleetpulse", later)
    assert event.note.startswith("repair -> warranty_claim")
    assert opened.recommended_action in event.note
    assert replanned.recommended_action in event.note
    assert record.payload == {
        "ticket_id": 1,
        "event_at": later.isoformat(),
        "from": None,
        "to": None,
        "note": event.note,
    }
    assert store.audit.verify().ok

    # a replay of the same record, and a newer one with the same facts, change nothing
    assert not svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2030, 1, 1), updated_at=later))
    assert svc.apply_inventory(
        make_inventory("pc-1", warranty_end=date(2030, 1, 1), updated_at=later + timedelta(minutes=1))
    )
    assert len(store.ticket_events(1)) == events + 1
    assert len(store.audit.records(limit=10_000)) == records + 1

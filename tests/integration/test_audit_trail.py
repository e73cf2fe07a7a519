"""Attacks on the audit trail by someone with database access, on SQLite and the real PostgreSQL.

The triggers refuse plain UPDATE/DELETE; an attacker who owns the database disables them
and edits, deletes, reorders, inserts or re-hashes records: ``audit verify`` must name the
first broken record every time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError

from fleetpulse.alerts.store import alembic_config, upgrade
from fleetpulse.alerts.store.audit import AuditActor, AuditContext, AuditKind, adopt_ticket_events, chain_hash
from fleetpulse.alerts.store.models import AuditRecord
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TransitionError
from fleetpulse.contract.v1 import TicketState
from tests.alerts_support import NOW, make_alert, service, store, store_url

__all__ = ["store", "store_url"]  # fixtures
ANNA = AuditActor("https://idp.example.org/realms/city", "5f1c-anna", "Anna Berg", "fleet_manager")
SQLITE_TRIGGERS = {
    "audit_log_no_update": "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
    "audit_log_no_delete": "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permit) "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
}


@pytest.fixture
def trail(store: TicketStore) -> TicketStore:
    """Six records: two tickets opened, a bulk approval (bulk + two transitions), an export."""
    svc = service(store)
    svc.apply_alert(make_alert(i=1), NOW)
    svc.apply_alert(make_alert(i=2, component_id="sn2", alert_id="pc-0001:disk:sn2:2:raised"), NOW)
    svc.transition(
        [1, 2], TicketState.APPROVED, "anna", NOW, "budget ok", context=AuditContext(ANNA, "r1", "192.0.2.10")
    )
    store.audit.record(AuditKind.CSV_EXPORT, ANNA, "r2", "192.0.2.10", {"filter": {"site": "Town Hall"}})
    assert store.audit.verify().ok
    return store


@contextmanager
def as_database_owner(store: TicketStore) -> Iterator[Connection]:
    """A connection of someone who owns the schema: the append-only triggers switched off."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            yield conn
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            for name in SQLITE_TRIGGERS:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for ddl in SQLITE_TRIGGERS.values():
                conn.execute(text(ddl))


def rehash(conn: Connection, seq: int) -> None:
    """What an attacker who read the code does after an edit: recompute that record's own hash."""
    row = conn.execute(select(AuditRecord.__table__).where(AuditRecord.seq == seq)).one()
    conn.execute(text("UPDATE audit_log SET hash = :h WHERE seq = :s"), {"h": chain_hash(row), "s": seq})


def broken(store: TicketStore) -> tuple[int | None, str]:
    result = store.audit.verify(page=2)  # small pages: the walk crosses page boundaries
    assert not result.ok
    return result.broken_seq, result.reason


def test_plain_update_delete_and_truncate_are_refused_by_the_database(trail: TicketStore) -> None:
    statements = ["UPDATE audit_log SET payload = '{}' WHERE seq = 4", "DELETE FROM audit_log WHERE seq = 6"]
    if trail.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), trail.engine.begin() as conn:
            conn.execute(text(statement))
    assert trail.audit.verify().ok
    assert trail.audit.verify().checked == 6


def test_editing_a_records_note_is_detected(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET payload = replace(payload, 'budget ok', 'no budget') WHERE seq = 4"))
    assert broken(trail) == (4, "its content does not match its hash (altered)")


def test_editing_and_rehashing_a_record_is_detected_at_its_successor(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET actor_subject = 'ben' WHERE seq = 4"))
        rehash(conn, 4)
    seq, reason = broken(trail)
    assert seq == 5
    assert "predecessor hash does not match record 4" in reason


def test_rehashing_the_last_record_is_detected_by_the_head(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET request_id = 'forged' WHERE seq = 6"))
        rehash(conn, 6)
    assert broken(trail) == (6, "its hash differs from the head's (the newest record was altered)")


def test_deleting_a_record_is_detected(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    assert broken(trail) == (4, "records 3..3 are missing")


def test_deleting_the_newest_records_is_detected(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 5"))
    assert broken(trail) == (5, "the chain ends at record 4 but the head says 6")


def test_deleting_the_oldest_records_without_a_prune_checkpoint_is_detected(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq <= 2"))
    assert broken(trail) == (3, "records 1..2 are missing and no prune checkpoint covers them")


def test_reordering_records_is_detected(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET seq = -1 WHERE seq = 2"))
        conn.execute(text("UPDATE audit_log SET seq = 2 WHERE seq = 3"))
        conn.execute(text("UPDATE audit_log SET seq = 3 WHERE seq = -1"))
    seq, reason = broken(trail)
    assert seq == 2
    assert "predecessor hash does not match record 1" in reason


def test_inserting_a_forged_record_is_detected(trail: TicketStore) -> None:
    """The forger renumbers the later records and gives the forged one a correct hash."""
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3"))
        conn.execute(text("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103"))
        prev = conn.execute(text("SELECT hash FROM audit_log WHERE seq = 2")).scalar_one()
        forged = trail.audit.records()[0].model_dump() | {
            "seq": 3,
            "kind": "ticket.transition",
            "actor_subject": "mallory",
            "payload": '{"note":"approved by mallory"}',
            "prev_hash": prev,
        }
        forged["hash"] = chain_hash(SimpleNamespace(**forged))
        conn.execute(
            text(
                "INSERT INTO audit_log (seq, at, kind, actor_issuer, actor_subject, actor_name, actor_role, "
                "request_id, source, payload, prev_hash, hash) VALUES (:seq, :at, :kind, :actor_issuer, "
                ":actor_subject, :actor_name, :actor_role, :request_id, :source, :payload, :prev_hash, :hash)"
            ),
            forged
            | {"at": forged["at"].replace(tzinfo=None) if trail.engine.dialect.name == "sqlite" else forged["at"]},
        )
    seq, _reason = broken(trail)
    assert seq == 4  # the forged record fits its predecessor; the renumbered one after it does not


def test_a_consistent_rewrite_of_the_chain_is_caught_by_an_anchor_kept_elsewhere(trail: TicketStore) -> None:
    anchor = (trail.audit.verify().head_seq, trail.audit.verify().head_hash)
    with as_database_owner(trail) as conn:
        conn.execute(text("UPDATE audit_log SET actor_subject = 'ben' WHERE seq = 4"))
        for seq in range(4, 7):
            if seq > 4:
                prev = conn.execute(text("SELECT hash FROM audit_log WHERE seq = :s"), {"s": seq - 1}).scalar_one()
                conn.execute(text("UPDATE audit_log SET prev_hash = :p WHERE seq = :s"), {"p": prev, "s": seq})
            rehash(conn, seq)
        head = conn.execute(text("SELECT hash FROM audit_log WHERE seq = 6")).scalar_one()
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": head})
    assert trail.audit.verify().ok  # undetectable from inside the database ...
    result = trail.audit.verify(anchor=anchor)
    assert (result.ok, result.broken_seq) == (False, 6)  # ... but not against the head kept outside


def test_prune_passes_the_guard_and_keeps_the_chain_verifiable(trail: TicketStore) -> None:
    trail.clock = lambda: NOW.replace(year=2030)
    assert trail.audit.prune(NOW.replace(year=2029)) == 6
    result = trail.audit.verify()
    assert result.ok
    assert result.first_seq == 7
    assert result.checked == 1


@pytest.mark.slow
def test_concurrent_writers_get_one_gapless_chain(store_url: str) -> None:
    """Four writers, each with its own engine like separate API replicas, appending at once."""
    stores = [TicketStore.open(store_url) for _ in range(4)]
    per_writer = 40
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def write(index: int, replica: TicketStore) -> None:
        try:
            barrier.wait()
            for n in range(per_writer):
                replica.audit.record(AuditKind.LOGIN_SUCCESS, ANNA, f"w{index}-{n}", "192.0.2.10")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        result = stores[0].audit.verify()
        assert result.ok, result
        assert result.checked == result.head_seq == len(stores) * per_writer
        ids = {r.request_id for r in stores[0].audit.records(limit=1000)}
        assert len(ids) == len(stores) * per_writer
    finally:
        for replica in stores:
            replica.close()


@pytest.mark.slow
def test_concurrent_ticket_writers_and_api_records_neither_deadlock_nor_fork_the_chain(store_url: str) -> None:
    """Consumers racing on the same alerts while replicas approve tickets and record exports."""
    stores = [TicketStore.open(store_url) for _ in range(4)]
    errors: list[BaseException] = []
    results: list[str] = []
    barrier = threading.Barrier(len(stores))

    def consume(replica: TicketStore) -> None:
        svc = service(replica)
        barrier.wait()
        for n in range(15):
            results.append(svc.apply_alert(make_alert(f"pc-{n:04d}"), NOW))

    def approve(replica: TicketStore) -> None:
        svc = service(replica)
        barrier.wait()
        for _ in range(15):
            replica.audit.record(AuditKind.CSV_EXPORT, ANNA, "r", "192.0.2.10", {"filter": {}})
            open_ids = [t.ticket_id for t in replica.open_tickets()]
            # another replica may have approved one of them first: refused as a whole, as it should be
            with contextlib.suppress(TransitionError):
                svc.transition(open_ids[:3], TicketState.APPROVED, "anna", NOW)

    def run(work: Callable[[TicketStore], None], replica: TicketStore) -> None:
        try:
            work(replica)
        except BaseException as exc:  # reported below
            errors.append(exc)

    work = [consume, consume, approve, approve]
    threads = [threading.Thread(target=run, args=(w, s)) for w, s in zip(work, stores, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        assert sorted(results).count("opened") == 15
        result = stores[0].audit.verify()
        assert result.ok, result
        opened = stores[0].audit.records(limit=10_000, kind="ticket.opened")
        assert len(opened) == 15  # a lost race records nothing
    finally:
        for replica in stores:
            replica.close()


def test_verify_and_export_during_appends_and_a_prune_raise_no_false_alarm(trail: TicketStore) -> None:
    """Verify reads one snapshot: records appended or pruned meanwhile do not look like tampering."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def append() -> None:
        try:
            while not stop.is_set():
                trail.audit.record(AuditKind.TOKEN_USE, ANNA, "bg", "192.0.2.10")
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        for round_ in range(5):
            result = trail.audit.verify(page=3)
            assert result.ok, result
            if round_ == 2:
                trail.clock = lambda: NOW.replace(year=2030)
                trail.audit.prune(NOW.replace(year=2029))
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert trail.audit.verify().ok


def test_a_garbage_prune_checkpoint_is_reported_not_crashed_on(trail: TicketStore) -> None:
    with as_database_owner(trail) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 1"))
        conn.execute(text("UPDATE audit_log SET kind = 'audit.pruned', payload = '[not json' WHERE seq = 6"))
    assert broken(trail) == (2, "records 1..1 are missing and no prune checkpoint covers them")


def test_ticket_events_written_before_the_trail_are_chained_once_by_the_upgrade(store: TicketStore) -> None:
    """A store upgraded from before the trail: its earlier ticket history becomes tamper-evident too."""
    svc = service(store)
    svc.apply_alert(make_alert(i=1), NOW)
    svc.transition([1], TicketState.APPROVED, "anna", NOW, "budget ok", context=AuditContext(ANNA, "r1", "192.0.2.10"))
    history = [(e.kind, e.actor) for e in store.ticket_events(1)]
    _migrate(store, "0004")  # back to the schema before the trail: only ticket_events hold the history
    upgrade(store.engine)
    imported = store.audit.records()
    assert [(r.kind.removeprefix("ticket."), r.payload["actor"]) for r in imported] == history
    assert all(r.payload["imported"] is True and r.payload["ticket_id"] == 1 for r in imported)
    svc.transition([1], TicketState.ORDERED, "anna", NOW, "ordered", context=AuditContext(ANNA, "r2", "192.0.2.10"))
    _migrate(store, "0007")  # the adoption applied again finds everything covered
    upgrade(store.engine)
    assert len(store.audit.records()) == len(history) + 1
    assert store.audit.verify().ok
    with as_database_owner(store) as conn:  # the imported history is covered by the chain now
        conn.execute(text("UPDATE audit_log SET payload = replace(payload, 'anna', 'mallory') WHERE seq = 2"))
    assert store.audit.verify().broken_seq == 2


def _migrate(store: TicketStore, revision: str) -> None:
    with store.engine.begin() as connection:
        cfg = alembic_config(store.engine)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def test_hostile_stored_payloads_neither_stop_the_adoption_nor_hide_an_event(trail: TicketStore) -> None:
    """Records rewritten by a database owner (not JSON, a list, a naive or garbage time, a text ticket id)
    cover no event and stop no upgrade: the events they claimed are chained again, and verify names the edit."""
    kinds = [r.kind for r in trail.audit.records()]
    assert kinds[:5] == ["ticket.opened", "ticket.opened", "tickets.bulk", "ticket.transition", "ticket.transition"]
    payloads = ["[not json", "[1, 2]", '{"ticket_id": 1, "event_at": "2026-11-01T12:00:00"}', '{"ticket_id": "1"}']
    with as_database_owner(trail) as conn:
        for seq, payload in zip((2, 3, 4, 5), payloads, strict=True):
            conn.execute(text("UPDATE audit_log SET payload = :p WHERE seq = :s"), {"p": payload, "s": seq})
        conn.execute(
            text("UPDATE audit_log SET kind = 'audit.pruned', payload = '{\"before\": \"soon\"}' WHERE seq = 6")
        )
    with trail.session() as session:
        adopted = adopt_ticket_events(session, NOW)
    assert adopted == 3  # both transitions and the second opening: only record 1 still names its event
    assert trail.audit.verify().broken_seq == 2

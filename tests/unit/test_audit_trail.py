"""The audit trail as the API, the ticket rules, the outbox and the operator use it (SQLite).

The tamper attacks and the PostgreSQL variants are in tests/integration/test_audit_trail.py.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpulse.alerts.connectors.base import Notification, PermanentDeliveryError
from fleetpulse.alerts.outbox import deliver_due
from fleetpulse.alerts.settings import AlertSettings, OutboxSettings
from fleetpulse.alerts.store.audit import AuditActor, AuditContext, AuditKind, stage
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TransitionError
from fleetpulse.cli import app
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import TicketState
from tests.alerts_support import NOW, make_alert, make_inventory, service
from tests.unit.deploy.tools import DEPLOY, retention_policy

ANNA = AuditActor("https://idp.example.org/realms/city", "5f1c-anna", "Anna Berg", "fleet_manager")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TicketStore]:
    opened = TicketStore.open(f"sqlite:///{tmp_path}/tickets.db")
    yield opened
    opened.close()


def test_the_api_records_logins_exports_and_logouts_with_the_asserted_identity(store: TicketStore) -> None:
    store.audit.record(AuditKind.LOGIN_SUCCESS, ANNA, "req-1", "192.0.2.10", {"method": "oidc"})
    store.audit.record(
        AuditKind.LOGIN_FAILURE,
        AuditActor("https://idp.example.org/realms/city", "", "", ""),
        "req-2",
        "192.0.2.66",
        {"reason": "id token audience mismatch"},
    )
    store.audit.record(AuditKind.CSV_EXPORT, ANNA, "req-3", "192.0.2.10", {"filter": {"site": "Town Hall"}, "rows": 12})
    store.audit.record(AuditKind.LOGOUT, ANNA, "req-4", "192.0.2.10")
    store.audit.record(AuditKind.TOKEN_USE, AuditActor.local("itsm-bot", "it_support"), "req-5", "10.1.2.3")

    records = store.audit.records()
    assert [r.kind for r in records] == [
        "login.success",
        "login.failure",
        "export.csv",
        "session.logout",
        "token.use",
    ]
    export = records[2]
    assert (export.actor_issuer, export.actor_subject, export.actor_name, export.actor_role) == (
        ANNA.issuer,
        ANNA.subject,
        ANNA.display_name,
        ANNA.role,
    )
    assert (export.request_id, export.source) == ("req-3", "192.0.2.10")
    assert export.payload == {"filter": {"site": "Town Hall"}, "rows": 12}
    assert records[4].actor_issuer == "local"
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(records))
    assert store.audit.verify().ok
    assert store.audit.records(after_seq=3, kind="token.use")[0].seq == 5


def test_hostile_identity_fields_are_bounded_and_kept_verbatim(store: TicketStore) -> None:
    hostile = AuditActor("i" * 5000, "s\x00\n" * 300, '=HYPERLINK("http://evil")', "r" * 300)
    view = store.audit.record(AuditKind.LOGIN_FAILURE, hostile, "q" * 999, "x" * 999, {"raw": "\u202e\x00"})
    assert len(view.actor_issuer) == 255
    assert len(view.actor_role) == 64
    assert len(view.request_id) == 128
    assert len(view.source) == 128
    assert store.audit.verify().ok
    out = io.StringIO()
    store.audit.export(out, "csv", None, None)
    assert "s\x00\n" in out.getvalue()
    row = next(iter(csv.DictReader(io.StringIO(out.getvalue().replace("\x00", "")))))  # 3.10's reader refuses NUL
    assert row["actor_name"] == '\'=HYPERLINK("http://evil")'  # never a formula in the auditor's spreadsheet


def test_ticket_lifecycle_and_bulk_actions_are_recorded_in_the_same_transaction(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_inventory(make_inventory())
    svc.apply_alert(make_alert(i=1), NOW)
    svc.apply_alert(make_alert(i=2, component_id="sn2", alert_id="pc-0001:disk:sn2:2:raised"), NOW)
    context = AuditContext(ANNA, "req-9", "192.0.2.10")
    svc.transition([1, 2], TicketState.APPROVED, "anna", NOW, "budget ok", context=context)
    svc.transition([1], TicketState.ORDERED, "ben", NOW)

    records = store.audit.records()
    assert [r.kind for r in records] == [
        "ticket.opened",
        "ticket.opened",
        "tickets.bulk",
        "ticket.transition",
        "ticket.transition",
        "ticket.transition",
    ]
    assert records[0].actor_subject == "fleetpulse"
    assert records[0].actor_role == "system"
    assert records[2].payload == {"tickets": [1, 2], "to": "approved", "outcome": None, "note": "budget ok"}
    approved = records[3]
    assert (approved.actor_subject, approved.request_id, approved.source) == ("5f1c-anna", "req-9", "192.0.2.10")
    assert approved.payload == {
        "ticket_id": 1,
        "event_at": NOW.isoformat(),
        "from": "open",
        "to": "approved",
        "note": "budget ok",
    }
    assert (records[5].actor_issuer, records[5].actor_subject) == ("local", "ben")
    # every ticket event has its audit record
    assert len(store.ticket_events(1)) + len(store.ticket_events(2)) == 5
    assert store.audit.verify().ok


def test_a_refused_transition_records_nothing(store: TicketStore) -> None:
    svc = service(store)
    svc.apply_alert(make_alert(), NOW)
    before = store.audit.verify().head_seq
    with pytest.raises(TransitionError):
        svc.transition([1, 99], TicketState.APPROVED, "anna", NOW)
    with pytest.raises(RuntimeError, match="rolled back"):
        _stage_then_fail(store)
    assert store.audit.verify().head_seq == before
    assert [r.kind for r in store.audit.records()] == ["ticket.opened"]


def _stage_then_fail(store: TicketStore) -> None:
    with store.session() as session:
        stage(session, AuditKind.BULK_ACTION, AuditContext(ANNA))
        raise RuntimeError("rolled back")


class _Connector:
    def __init__(self, name: str, fail: bool) -> None:
        self.name = name
        self.fail = fail

    def deliver(self, notification: Notification) -> str | None:
        if self.fail:
            raise PermanentDeliveryError("401 login rejected", whole_target=True)
        return "INC0012345"


def test_connector_deliveries_are_recorded_with_target_and_outcome(store: TicketStore) -> None:
    connectors = [
        {"kind": "webhook", "name": "itsm", "url": "https://itsm.example.org/"},
        {"kind": "webhook", "name": "chat", "url": "https://chat.example.org/"},
    ]
    service(store, connectors=connectors).apply_alert(make_alert(), NOW)
    report = deliver_due(
        store, {"itsm": _Connector("itsm", False), "chat": _Connector("chat", True)}, None, OutboxSettings(), NOW
    )
    assert (report.delivered, report.needs_attention) == (1, 1)
    deliveries = {r.payload["target"]: r for r in store.audit.records() if r.kind.startswith("delivery.")}
    assert deliveries["itsm"].kind == "delivery.delivered"
    assert deliveries["itsm"].payload["external_ref"] == "INC0012345"
    assert deliveries["chat"].kind == "delivery.needs_attention"
    assert "401 login rejected" in deliveries["chat"].payload["error"]
    assert deliveries["chat"].payload["dedup_key"] == "fleetpulse-ticket-1"
    assert store.audit.verify().ok


def _at(store: TicketStore, when: datetime) -> None:
    store.clock = lambda: when


def test_prune_removes_whole_old_ranges_and_leaves_a_verifiable_checkpoint(store: TicketStore) -> None:
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    for day in range(10):
        _at(store, t0 + timedelta(days=day))
        store.audit.record(AuditKind.LOGIN_SUCCESS, ANNA, f"req-{day}", "192.0.2.10")
    cut_hash = store.audit.records()[5].hash
    _at(store, t0 + timedelta(days=20))
    assert store.audit.prune(t0 + timedelta(days=6)) == 6
    assert store.audit.prune(t0 + timedelta(days=6)) == 0  # nothing older is left
    remaining = store.audit.records()
    assert remaining[0].seq == 7
    assert remaining[-1].kind == "audit.pruned"
    assert remaining[-1].payload["pruned_through"] == 6
    assert remaining[-1].payload["head_hash"] == cut_hash
    result = store.audit.verify()
    assert result.ok, result
    assert (result.first_seq, result.checked) == (7, 5)
    # a second prune, past the first checkpoint, stays verifiable too
    _at(store, t0 + timedelta(days=30))
    assert store.audit.prune(t0 + timedelta(days=25)) == 5
    assert store.audit.verify().ok


def test_retention_policy_sets_the_audit_default_and_is_documented() -> None:
    days = retention_policy()["postgres"]["audit_days"]
    assert AlertSettings().consumer.audit_retention == timedelta(days=days)
    doc = (DEPLOY / "production.md").read_text(encoding="utf-8")
    (line,) = [row for row in doc.splitlines() if row.startswith("| PostgreSQL audit trail")]
    assert f"| {days} days " in line


def test_cli_verifies_exports_and_prunes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tickets.db"
    store = TicketStore.open(url)
    _at(store, datetime(2020, 1, 1, tzinfo=UTC))
    store.audit.record(AuditKind.LOGIN_SUCCESS, ANNA, "old", "192.0.2.10")
    _at(store, datetime.now(UTC))
    store.audit.record(AuditKind.CSV_EXPORT, ANNA, "new", "192.0.2.10", {"filter": {"site": "Depot"}})
    store.close()
    runner = CliRunner(env={"FLEETPULSE_ALERTS__STORE_URL": url})

    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    head = verified.output.strip().splitlines()[-1].removeprefix("head ")
    assert runner.invoke(app, ["audit", "verify", "--anchor", head]).exit_code == 0
    wrong = runner.invoke(app, ["audit", "verify", "--anchor", f"2:{'0' * 64}"])
    assert wrong.exit_code == 1
    assert "anchor" in wrong.output

    exported = runner.invoke(app, ["audit", "export", "--since", "2024-01-01T00:00:00"])
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["seq"], r["request_id"]) for r in lines] == [(2, "new")]
    as_csv = runner.invoke(app, ["audit", "export", "--format", "csv", "--until", "2024-01-01"])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["request_id"] for r in rows] == ["old"]

    pruned = runner.invoke(app, ["audit", "prune"])
    assert pruned.exit_code == 0
    assert "1 audit records" in pruned.output
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0

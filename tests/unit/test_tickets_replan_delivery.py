"""A ticket re-planned after its incident reached the ITSM: the service desk works from the incident, so the
new recommended action must reach it as an update of that incident (a work note, an action, a follow-up
mail), through the same outbox as the incident itself: at least once, retried while the ITSM is down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from fleetpulse.alerts.connectors.base import DeliveryError, Notification
from fleetpulse.alerts.connectors.config import ServiceNowConfig, TopdeskConfig
from fleetpulse.alerts.connectors.http import ServiceNow, Topdesk
from fleetpulse.alerts.outbox import deliver_due
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.models import OutboxRow
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert, make_inventory, service, store, store_url
from tests.harness import http_server
from tests.unit.test_connectors_updates import HOSTILE_SYS_ID, HOSTILE_TOPDESK_ID, SYS_ID, TOPDESK_ID, FakeItsm

__all__ = ["store", "store_url"]  # fixtures: SQLite, and PostgreSQL when integration tests run

CONNECTORS = [
    {"kind": "webhook", "name": "hook", "url": "https://hooks.example.org/"},
    {"kind": "smtp", "name": "mail", "recipients": ["it@example.org"]},
]
LATER = NOW + timedelta(hours=1)


class Recording:
    """A connector that keeps what it was handed and answers with a reference per incident, or fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Notification] = []
        self.down = False

    def deliver(self, notification: Notification) -> str | None:
        if self.down:
            raise DeliveryError("ConnectError: connection refused")
        self.seen.append(notification)
        return f"<{notification.dedup_key}.{len(self.seen)}@{self.name}>"


def opened_and_delivered(store: TicketStore) -> tuple[TicketService, dict[str, Recording]]:
    """A ticket whose plan is a repair (warranty expired), delivered to both connectors."""
    svc = service(store, connectors=CONNECTORS)
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1)))
    svc.apply_alert(make_alert("pc-1"), NOW)
    connectors = {name: Recording(name) for name in ("hook", "mail")}
    assert deliver_due(store, connectors, None, OutboxSettings(), NOW).delivered == 2
    return svc, connectors


def replan(svc: TicketService) -> None:
    """The warranty turns out to run until 2030: the repair becomes a warranty claim."""
    assert svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2030, 1, 1), updated_at=LATER), now=LATER)


def test_a_replan_after_delivery_updates_each_connectors_incident(store: TicketStore) -> None:
    svc, connectors = opened_and_delivered(store)
    was = store.get_ticket(1)
    replan(svc)
    now = store.get_ticket(1)
    assert was is not None
    assert now is not None
    assert now.action_kind == "warranty_claim"

    queued = sorted((r.target, r.subject, r.dedup_key) for r in store.outbox() if r.delivered_at is None)
    assert queued == [
        ("hook", "update", "fleetpulse-ticket-1-replan-1"),
        ("mail", "update", "fleetpulse-ticket-1-replan-1"),
    ]
    assert deliver_due(store, connectors, None, OutboxSettings(), LATER).delivered == 2
    for name, connector in connectors.items():
        first, update = connector.seen
        assert update.subject == "update"
        assert update.dedup_key == first.dedup_key == "fleetpulse-ticket-1"  # names the incident
        assert update.update_id == "fleetpulse-ticket-1-replan-1"
        assert f"Recommended action now: {now.recommended_action}" in update.body
        assert f"Previously recommended: {was.recommended_action}" in update.body
        assert "re-planned" in update.title
        # what the target answered for the incident, so the update can name it (a mail its Message-ID)
        assert update.first_reference == f"<fleetpulse-ticket-1.1@{name}>"
        assert update.first_title == first.title


def test_each_replan_is_its_own_update_and_an_unchanged_plan_sends_nothing(store: TicketStore) -> None:
    svc, _ = opened_and_delivered(store)
    replan(svc)
    # same plan again (the site moved): nothing more to tell
    moved = make_inventory("pc-1", warranty_end=date(2030, 1, 1), site="Library", updated_at=LATER + timedelta(1))
    assert svc.apply_inventory(moved, now=LATER)
    # and back: the warranty entry was a typo
    typo = make_inventory("pc-1", warranty_end=date(2025, 3, 1), updated_at=LATER + timedelta(2))
    assert svc.apply_inventory(typo, now=LATER)
    updates = sorted(r.dedup_key for r in store.outbox() if r.target == "mail" and r.subject == "update")
    assert updates == ["fleetpulse-ticket-1-replan-1", "fleetpulse-ticket-1-replan-2"]


def test_an_itsm_down_delays_the_update_and_loses_nothing(store: TicketStore) -> None:
    svc, connectors = opened_and_delivered(store)
    replan(svc)
    connectors["hook"].down = True
    report = deliver_due(store, connectors, None, OutboxSettings(), LATER)
    assert (report.delivered, report.failed) == (1, 1)
    connectors["hook"].down = False
    later = LATER + OutboxSettings().backoff_max
    assert deliver_due(store, connectors, None, OutboxSettings(), later).delivered == 1
    assert [n.subject for n in connectors["hook"].seen] == ["ticket", "update"]
    assert not [r for r in store.outbox() if r.delivered_at is None]


def test_a_replan_before_delivery_follows_the_incident(store: TicketStore) -> None:
    """The incident is still in the outbox (the ITSM was down): the update is queued behind it."""
    svc = service(store, connectors=CONNECTORS)
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1)))
    svc.apply_alert(make_alert("pc-1"), NOW)
    replan(svc)
    connectors = {name: Recording(name) for name in ("hook", "mail")}
    assert deliver_due(store, connectors, None, OutboxSettings(), LATER).delivered == 4
    assert [n.subject for n in connectors["mail"].seen] == ["ticket", "update"]


def test_storm_members_have_no_incident_of_their_own_to_update(store: TicketStore) -> None:
    svc = service(store, storm={"threshold": 2}, connectors=CONNECTORS)
    for device in ("pc-1", "pc-2"):
        svc.apply_inventory(make_inventory(device, warranty_end=date(2025, 3, 1)))
    svc.apply_alert(make_alert("pc-1"), NOW)  # alone: its own incident
    svc.apply_alert(make_alert("pc-2"), NOW)  # second of its key: a storm, one problem incident
    before = len(store.outbox())
    assert svc.apply_inventory(make_inventory("pc-2", warranty_end=date(2030, 1, 1), updated_at=LATER), now=LATER)
    assert len(store.outbox()) == before
    replan(svc)
    assert sorted(r.dedup_key for r in store.outbox() if r.subject == "update") == ["fleetpulse-ticket-1-replan-1"] * 2


def test_an_update_queued_before_updates_carried_an_id_is_named_by_its_row(store: TicketStore) -> None:
    """Rows an earlier release queued (no update id in the payload) still get one a retry can look for."""
    svc, connectors = opened_and_delivered(store)
    replan(svc)
    with store.session() as session:
        for row in session.query(OutboxRow).filter(OutboxRow.subject == "update"):
            row.payload = {k: v for k, v in row.payload.items() if k != "update_id"}
    deliver_due(store, connectors, None, OutboxSettings(), LATER)
    assert connectors["mail"].seen[-1].update_id == "fleetpulse-ticket-1-replan-1"


@pytest.fixture
def snow() -> Iterator[tuple[FakeItsm, ServiceNow]]:
    """The fake ServiceNow, without the incident until fleetpulse creates it, and a connector to it."""
    fake = FakeItsm(reads={1: (200, b'{"result": []}')})  # the lookup before creating finds nothing
    with http_server(fake.handler()) as url:
        yield (
            fake,
            ServiceNow(
                ServiceNowConfig(name="snow", instance_url=url, username="svc", password="pw", allow_insecure=True)
            ),
        )


@pytest.fixture
def topdesk() -> Iterator[tuple[FakeItsm, Topdesk]]:
    """The fake TOPdesk, without the incident until fleetpulse creates it, and a connector to it."""
    fake = FakeItsm(deleted=True)  # the lookup before creating finds nothing; the POST creates it
    with http_server(fake.handler()) as url:
        yield fake, Topdesk(TopdeskConfig(name="td", url=url, username="svc", app_password="pw", allow_insecure=True))


def delivered_to_itsm(store: TicketStore, itsm: ServiceNow | Topdesk) -> TicketService:
    """A ticket delivered to ``itsm`` (creating the incident), then re-planned: one update queued."""
    secret = "app_password" if isinstance(itsm, Topdesk) else "password"
    config = itsm.config.model_dump(mode="json") | {secret: "pw"}
    svc = service(store, connectors=[config])
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1)))
    svc.apply_alert(make_alert("pc-1"), NOW)
    assert deliver_due(store, {itsm.name: itsm}, None, OutboxSettings(), NOW).delivered == 1
    replan(svc)
    return svc


def test_a_servicenow_update_goes_to_the_sys_id_returned_at_creation(
    store: TicketStore, snow: tuple[FakeItsm, ServiceNow]
) -> None:
    fake, connector = snow
    delivered_to_itsm(store, connector)
    incident = store.incident_of("snow", "fleetpulse-ticket-1")
    assert incident is not None
    assert (incident.reference, incident.record_id) == ("INC1", SYS_ID)
    fake.paths.clear()
    assert deliver_due(store, {"snow": connector}, None, OutboxSettings(), LATER).delivered == 1
    assert fake.paths == [f"GET /api/now/table/incident/{SYS_ID}", f"PATCH /api/now/table/incident/{SYS_ID}"]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_attack_a_hostile_sys_id_at_creation_is_not_stored_and_never_aims_an_update(
    store: TicketStore, snow: tuple[FakeItsm, ServiceNow]
) -> None:
    """A compromised ITSM answers the new incident with a path: the update finds the incident by correlation id."""
    fake, connector = snow
    fake.created_sys_id = HOSTILE_SYS_ID
    delivered_to_itsm(store, connector)
    incident = store.incident_of("snow", "fleetpulse-ticket-1")
    assert incident is not None
    assert incident.record_id is None
    assert deliver_due(store, {"snow": connector}, None, OutboxSettings(), LATER).delivered == 1
    assert "sys_user" not in " ".join(fake.paths)
    assert fake.paths[-2:] == ["GET /api/now/table/incident", f"PATCH /api/now/table/incident/{SYS_ID}"]
    incident = store.incident_of("snow", "fleetpulse-ticket-1")
    assert incident is not None
    assert incident.record_id == SYS_ID  # the sys_id the lookup found: the next update goes there


def test_an_update_of_a_deleted_servicenow_incident_waits_for_an_administrator_with_the_reason(
    store: TicketStore, snow: tuple[FakeItsm, ServiceNow], caplog: pytest.LogCaptureFixture
) -> None:
    fake, connector = snow
    delivered_to_itsm(store, connector)
    fake.deleted = True
    with caplog.at_level(logging.ERROR):
        report = deliver_due(store, {"snow": connector}, None, OutboxSettings(), LATER)
    assert (report.delivered, report.failed, report.needs_attention) == (0, 0, 1)
    (row,) = [r for r in store.outbox() if r.subject == "update"]
    assert row.needs_attention
    assert row.last_error is not None
    assert "incident fleetpulse-ticket-1 is gone" in row.last_error
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "is gone" in logged.fields["error"]  # type: ignore[attr-defined]
    # not retried at the backoff's pace: only after the recheck (or an administrator's retry)
    requests = len(fake.paths)
    assert (
        deliver_due(store, {"snow": connector}, None, OutboxSettings(), LATER + timedelta(hours=1)).needs_attention == 0
    )
    assert len(fake.paths) == requests


TD_BY_ID = f"/tas/api/incidents/id/{TOPDESK_ID}"


def test_a_topdesk_update_goes_to_the_id_returned_at_creation(
    store: TicketStore, topdesk: tuple[FakeItsm, Topdesk]
) -> None:
    fake, connector = topdesk
    delivered_to_itsm(store, connector)
    incident = store.incident_of("td", "fleetpulse-ticket-1")
    assert incident is not None
    assert (incident.reference, incident.record_id) == ("I 1", TOPDESK_ID)
    fake.paths.clear()
    assert deliver_due(store, {"td": connector}, None, OutboxSettings(), LATER).delivered == 1
    assert fake.paths == [f"GET {TD_BY_ID}", f"GET {TD_BY_ID}/actions", f"PATCH {TD_BY_ID}"]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_attack_a_hostile_topdesk_id_at_creation_is_not_stored_and_never_aims_an_update(
    store: TicketStore, topdesk: tuple[FakeItsm, Topdesk]
) -> None:
    """A compromised TOPdesk answers the new incident with a path: the update finds the incident by external number."""
    fake, connector = topdesk
    fake.created_topdesk_id = HOSTILE_TOPDESK_ID
    delivered_to_itsm(store, connector)
    incident = store.incident_of("td", "fleetpulse-ticket-1")
    assert incident is not None
    assert (incident.reference, incident.record_id) == ("I 1", None)
    fake.paths.clear()
    assert deliver_due(store, {"td": connector}, None, OutboxSettings(), LATER).delivered == 1
    assert "persons" not in " ".join(fake.paths)
    assert fake.paths == ["GET /tas/api/incidents", f"GET {TD_BY_ID}/actions", f"PATCH {TD_BY_ID}"]
    incident = store.incident_of("td", "fleetpulse-ticket-1")
    assert incident is not None
    assert incident.record_id == TOPDESK_ID  # the id the lookup found, a UUID: the next update goes there


def replan_again(svc: TicketService) -> None:
    """The warranty entry was a typo after all: the plan goes back, a second update is queued."""
    typo = make_inventory("pc-1", warranty_end=date(2025, 3, 1), updated_at=LATER + timedelta(2))
    assert svc.apply_inventory(typo, now=LATER)


MOVED_SYS_ID = "0123456789abcdef0123456789abcdef"
MOVED_TOPDESK_ID = "11111111-2222-4333-8444-555555555555"


@pytest.mark.parametrize("kind", ["servicenow", "topdesk"])
def test_an_incident_found_under_a_new_id_is_addressed_by_it_from_the_next_update_on(
    kind: str, store: TicketStore, snow: tuple[FakeItsm, ServiceNow], topdesk: tuple[FakeItsm, Topdesk]
) -> None:
    """The incident was merged or re-created under another id: one update pays the 404 and the lookup,
    the incident's row keeps the id found, and the next update goes straight to it."""
    fake, connector = snow if kind == "servicenow" else topdesk
    svc = delivered_to_itsm(store, connector)
    if kind == "servicenow":
        old, new = f"/api/now/table/incident/{SYS_ID}", f"/api/now/table/incident/{MOVED_SYS_ID}"
        lookup, checked, moved = "GET /api/now/table/incident", [], MOVED_SYS_ID
        fake.sys_id = MOVED_SYS_ID
    else:
        old, new = TD_BY_ID, f"/tas/api/incidents/id/{MOVED_TOPDESK_ID}"
        lookup, checked, moved = "GET /tas/api/incidents", [f"GET {new}/actions"], MOVED_TOPDESK_ID
        fake.topdesk_id = MOVED_TOPDESK_ID
    fake.paths.clear()
    assert deliver_due(store, {connector.name: connector}, None, OutboxSettings(), LATER).delivered == 1
    assert fake.paths == [f"GET {old}", lookup, *checked, f"PATCH {new}"]
    incident = store.incident_of(connector.name, "fleetpulse-ticket-1")
    assert incident is not None
    assert incident.record_id == moved

    replan_again(svc)
    fake.paths.clear()
    assert deliver_due(store, {connector.name: connector}, None, OutboxSettings(), LATER).delivered == 1
    assert fake.paths == [f"GET {new}", *checked, f"PATCH {new}"]  # no 404, no lookup
    assert fake.marked("fleetpulse-ticket-1-replan-2") == 1


def test_an_incident_id_is_recorded_whole_on_the_incident_row_of_its_target_only(store: TicketStore) -> None:
    """A cut id would address another record; the update rows and the other targets' incidents keep theirs."""
    svc, _ = opened_and_delivered(store)
    replan(svc)
    assert not store.record_incident_id("mail", "fleetpulse-ticket-1", "a" * 65)
    assert store.record_incident_id("mail", "fleetpulse-ticket-1", "a" * 64)
    assert not store.record_incident_id("mail", "fleetpulse-ticket-2", "b" * 32)  # no such incident
    mail, hook = (store.incident_of(target, "fleetpulse-ticket-1") for target in ("mail", "hook"))
    assert mail is not None
    assert hook is not None
    assert (mail.record_id, hook.record_id) == ("a" * 64, None)
    with store.session() as session:
        updates = session.query(OutboxRow).filter(OutboxRow.subject == "update").all()
        assert [row.external_id for row in updates] == [None, None]

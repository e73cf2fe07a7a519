"""Updates of an incident the ITSM already has (a re-planned action, a lifecycle change) go through the
outbox, so they are sent at least once: a retry after a lost answer must not add the same note twice
where the ITSM lets the connector look (ServiceNow's work notes, TOPdesk's actions), and a follow-up
mail must thread under the first one. Answers are hostile or broken at times; credentials never leak.

The ITSM is a small fake on 127.0.0.1 that keeps the notes it was sent; the relay a raw socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import SMTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification, PermanentDeliveryError, Receipt
from fleetpulse.alerts.connectors.config import ServiceNowConfig, SmtpConfig, TopdeskConfig, WebhookConfig
from fleetpulse.alerts.connectors.http import ServiceNow, Topdesk, Webhook
from fleetpulse.alerts.connectors.mail import Smtp
from tests.harness import http_server, listener
from tests.unit.test_connectors_smtp_quit import relay

PASSWORD = "itsm-pw-31415"
SYS_ID = "9d385017c611228701d22104cc95c371"
"""The incident's sys_id in the fake ServiceNow (ServiceNow's are 32 hex digits)."""
HOSTILE_SYS_ID = "../../api/now/table/sys_user"
TOPDESK_ID = "8f0e2c1a-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
"""The incident's id in the fake TOPdesk (TOPdesk's are UUIDs)."""
Scripted = tuple[int, bytes]


@dataclass
class FakeItsm:
    """One incident (``INC1``/``SYS_ID`` in ServiceNow, ``I 1``/``topdesk_id`` in TOPdesk) and its notes, newest first.

    ``patches`` scripts the answer to a PATCH (1 = the first) after it was applied (a lost answer);
    ``reads`` scripts the answer to the GET of the incident's notes instead of the real one. ServiceNow
    answers a new incident with ``created_sys_id``, TOPdesk with ``created_topdesk_id``; ``sys_id`` and
    ``topdesk_id`` are the incident's ids (change them: it was merged or re-created); ``deleted``
    removes the incident (TOPdesk: until a POST creates it). TOPdesk lists actions ``start``/``page_size``
    at a time, as the real one does. ``paths`` keeps every request's path."""

    notes: list[str] = field(default_factory=list)
    patches: dict[int, Scripted] = field(default_factory=dict)
    reads: dict[int, Scripted] = field(default_factory=dict)
    patch_count: int = 0
    read_count: int = 0
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    posted: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sys_id: str = SYS_ID
    created_sys_id: str = SYS_ID
    topdesk_id: str = TOPDESK_ID
    created_topdesk_id: str = TOPDESK_ID
    deleted: bool = False

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def incident(self, query: dict[str, list[str]]) -> dict[str, Any]:
                record: dict[str, Any] = {"number": "INC1", "sys_id": fake.sys_id}
                if "work_notes" in query.get("sysparm_fields", [""])[0]:
                    # the journal as its display value: every entry, newest first, one string
                    record["work_notes"] = "".join(
                        f"2026-11-02 10:00:00 - svc (Work notes)\n{n}\n\n" for n in fake.notes
                    )
                return record

            def do_GET(self) -> None:
                path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
                fake.paths.append(f"GET {path}")
                fake.queries.append(query)
                if path in ("/api/now/table/incident", f"/api/now/table/incident/{fake.sys_id}"):
                    fake.read_count += 1
                    if fake.read_count in fake.reads:
                        self.answer(*fake.reads[fake.read_count])
                    elif path.endswith(fake.sys_id):
                        gone = b'{"error": {"message": "No Record found"}, "status": "failure"}'
                        self.answer(404, gone) if fake.deleted else self.answer(
                            200, json.dumps({"result": self.incident(query)}).encode()
                        )
                    else:
                        found = [] if fake.deleted else [self.incident(query)]
                        self.answer(200, json.dumps({"result": found}).encode())
                elif path == "/tas/api/incidents":
                    found = [{"id": fake.topdesk_id, "number": "I 1"}]
                    self.answer(204, b"") if fake.deleted else self.answer(200, json.dumps(found).encode())
                elif path == f"/tas/api/incidents/id/{fake.topdesk_id}" and not fake.deleted:
                    self.answer(
                        200, json.dumps({"id": fake.topdesk_id, "number": "I 1", "status": "firstLine"}).encode()
                    )
                elif path == f"/tas/api/incidents/id/{fake.topdesk_id}/actions":
                    fake.read_count += 1
                    if fake.read_count in fake.reads:
                        self.answer(*fake.reads[fake.read_count])
                        return
                    start, size = int(query.get("start", ["0"])[0]), int(query.get("page_size", ["10"])[0])
                    actions = [{"id": f"a{i}", "memoText": n} for i, n in enumerate(fake.notes)][start : start + size]
                    self.answer(200, json.dumps(actions).encode()) if actions else self.answer(204, b"")
                else:
                    self.answer(404, b"{}")

            def do_PATCH(self) -> None:
                path = urlsplit(self.path).path
                fake.paths.append(f"PATCH {path}")
                if fake.deleted or path not in (
                    f"/api/now/table/incident/{fake.sys_id}",
                    f"/tas/api/incidents/id/{fake.topdesk_id}",
                ):
                    self.answer(404, b"{}")
                    return
                fake.patch_count += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.notes.insert(0, body.get("work_notes") or body["action"])
                self.answer(*fake.patches.get(fake.patch_count, (200, b"{}")))

            def do_POST(self) -> None:
                fake.paths.append(f"POST {urlsplit(self.path).path}")
                fake.posted.append(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/now/table/incident":
                    created = {"result": {"number": "INC1", "sys_id": fake.created_sys_id}}
                    self.answer(201, json.dumps(created).encode())
                elif self.path == "/tas/api/incidents":
                    fake.deleted = False
                    self.answer(201, json.dumps({"id": fake.created_topdesk_id, "number": "I 1"}).encode())
                else:
                    self.answer(200, b"{}")

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def marked(self, update_id: str) -> int:
        return sum(f"[fleetpulse update {update_id}]" in note for note in self.notes)


@pytest.fixture
def itsm() -> Iterator[tuple[FakeItsm, str]]:
    fake = FakeItsm()
    with http_server(fake.handler()) as url:
        yield fake, url


def connector(kind: str, url: str) -> Connector:
    common: dict[str, Any] = {"username": "svc", "allow_insecure": True, "timeout_s": 5.0}
    if kind == "servicenow":
        return ServiceNow(ServiceNowConfig(name="snow", instance_url=url, password=PASSWORD, **common))
    return Topdesk(TopdeskConfig(name="td", url=url, app_password=PASSWORD, **common))


def update(update_id: str = "fleetpulse-ticket-1-replan-1", **fields: Any) -> Notification:
    return Notification.model_validate(
        {
            "subject": "update",
            "dedup_key": "fleetpulse-ticket-1",
            "title": "[fleetpulse] ticket 1 re-planned: Replace the battery",
            "body": "Recommended action now: Replace the battery\nPreviously recommended: Replace the laptop",
            "urgency": "high",
            "update_id": update_id,
        }
        | fields
    )


FOUND = {"servicenow": Receipt("INC1", SYS_ID), "topdesk": Receipt("I 1", TOPDESK_ID)}
"""What an update that had to look its incident up returns: the reference and the id found, for the outbox to keep."""
KINDS = ["servicenow", "topdesk"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_update_is_one_note_on_the_incident_with_its_marker(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    assert connector(kind, url).deliver(update()) == FOUND[kind]
    (note,) = fake.notes
    assert "Recommended action now: Replace the battery" in note
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lost", [(504, b'{"error": "gateway timeout"}'), (502, b"<html>bad gateway</html>")])
def test_attack_a_retry_after_a_lost_answer_does_not_note_the_update_twice(
    kind: str, lost: Scripted, itsm: tuple[FakeItsm, str]
) -> None:
    fake, url = itsm
    fake.patches = {1: lost}  # noted, but the answer is lost: the outbox retries
    itsm_connector = connector(kind, url)
    with pytest.raises(DeliveryError) as raised:
        itsm_connector.deliver(update())
    assert not isinstance(raised.value, PermanentDeliveryError)
    assert itsm_connector.deliver(update()) == FOUND[kind]
    assert itsm_connector.deliver(update()) == FOUND[kind]
    assert fake.patch_count == 1
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_each_update_is_noted_though_one_id_starts_another(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    itsm_connector = connector(kind, url)
    itsm_connector.deliver(update("fleetpulse-ticket-1-replan-10"))
    itsm_connector.deliver(update("fleetpulse-ticket-1-replan-1"))
    assert fake.patch_count == 2


def test_servicenow_reads_the_journal_only_for_an_update(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    connector("servicenow", url).deliver(update())
    (query,) = fake.queries
    assert query["sysparm_fields"] == ["number,sys_id,work_notes"]
    assert query["sysparm_display_value"] == ["true"]
    assert query["sysparm_query"] == ["correlation_id=fleetpulse-ticket-1"]


@pytest.mark.parametrize(
    "hostile",
    [
        (200, b"<html>proxy maintenance</html>"),
        (200, b'{"actions": "none"}'),
        (200, b'["a1", "a2"]'),
        (503, b'{"error": "busy"}'),
        (429, b""),
    ],
    ids=["html", "object", "not-records", "503", "429"],
)
def test_attack_topdesk_actions_that_cannot_be_read_keep_the_update_waiting(
    hostile: Scripted, itsm: tuple[FakeItsm, str]
) -> None:
    """Noting it blind could note it twice: the update waits for an answer that can be checked."""
    fake, url = itsm
    fake.reads = {1: hostile}
    td = connector("topdesk", url)
    with pytest.raises(DeliveryError) as raised:
        td.deliver(update())
    assert not isinstance(raised.value, PermanentDeliveryError)
    assert fake.patch_count == 0
    assert td.deliver(update()) == FOUND["topdesk"]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_an_account_that_may_not_read_the_notes_notes_anyway(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    """A documented limit: without read access to the notes a retry after a lost answer can add one twice."""
    fake, url = itsm
    if kind == "servicenow":  # the journal comes back empty or as a non-text value
        found = {"result": [{"number": "INC1", "sys_id": SYS_ID, "work_notes": 7}]}
        fake.reads = {1: (200, json.dumps(found).encode())}
    else:
        fake.reads = {1: (403, b'{"message": "no access"}')}
    assert connector(kind, url).deliver(update()) == FOUND[kind]
    assert fake.patch_count == 1


@pytest.mark.parametrize("kind", KINDS)
def test_attack_an_error_answer_echoing_the_credentials_is_scrubbed(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    fake.patches = {1: (500, f'{{"error": "bad login svc:{PASSWORD}", "password": "{PASSWORD}"}}'.encode())}
    with pytest.raises(DeliveryError) as raised:
        connector(kind, url).deliver(update())
    assert "HTTP 500" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_attack_a_hostile_incident_id_never_reaches_a_request_url(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    found = {"result": [{"number": "INC1", "sys_id": "../../sys_user/admin"}]}
    fake.reads = {1: (200, json.dumps(found).encode())}
    with pytest.raises(PermanentDeliveryError, match="unusable incident id"):
        connector("servicenow", url).deliver(update())
    assert fake.patch_count == 0


STORED = {"first_record_id": SYS_ID, "first_reference": "INC1"}
"""What the outbox hands an update of an incident this release created: the sys_id ServiceNow returned."""
BY_SYS_ID = f"/api/now/table/incident/{SYS_ID}"


def test_servicenow_creation_returns_the_sys_id_for_the_updates(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    fake.reads = {1: (200, b'{"result": []}')}  # no incident yet
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    assert connector("servicenow", url).deliver(ticket) == Receipt("INC1", SYS_ID)


def test_servicenow_updates_the_incident_by_its_stored_sys_id(itsm: tuple[FakeItsm, str]) -> None:
    """No query by correlation id (a search of the incident table) per update: the incident is read by its id."""
    fake, url = itsm
    assert connector("servicenow", url).deliver(update(**STORED)) == "INC1"
    assert fake.paths == [f"GET {BY_SYS_ID}", f"PATCH {BY_SYS_ID}"]
    assert fake.queries == [{"sysparm_fields": ["number,sys_id,work_notes"], "sysparm_display_value": ["true"]}]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


@pytest.mark.parametrize("lost", [(504, b'{"error": "gateway timeout"}'), (502, b"<html>bad gateway</html>")])
def test_attack_a_retry_by_sys_id_after_a_lost_answer_does_not_note_the_update_twice(
    lost: Scripted, itsm: tuple[FakeItsm, str]
) -> None:
    fake, url = itsm
    fake.patches = {1: lost}
    snow = connector("servicenow", url)
    with pytest.raises(DeliveryError):
        snow.deliver(update(**STORED))
    assert snow.deliver(update(**STORED)) == "INC1"
    assert fake.patch_count == 1
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_servicenow_a_stored_sys_id_answering_404_is_looked_up_once_by_correlation_id(
    itsm: tuple[FakeItsm, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The stored id names no incident any more, but one carries the correlation id: the note goes there."""
    fake, url = itsm
    stale = "f" * 32
    with caplog.at_level(logging.WARNING):
        assert (
            connector("servicenow", url).deliver(update(first_record_id=stale, first_reference="INC1"))
            == FOUND["servicenow"]
        )
    assert fake.paths == [f"GET /api/now/table/incident/{stale}", "GET /api/now/table/incident", f"PATCH {BY_SYS_ID}"]
    assert "not found by its stored sys_id" in caplog.text
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_servicenow_an_incident_deleted_since_needs_attention_with_the_reason(itsm: tuple[FakeItsm, str]) -> None:
    """Deleted or merged away: no retry brings it back, so the update is parked with why instead of retried."""
    fake, url = itsm
    fake.deleted = True
    with pytest.raises(PermanentDeliveryError, match=f"incident fleetpulse-ticket-1 is gone: its sys_id {SYS_ID}"):
        connector("servicenow", url).deliver(update(**STORED))
    assert fake.paths == [f"GET {BY_SYS_ID}", "GET /api/now/table/incident"]  # one lookup, nothing noted


@pytest.mark.parametrize(
    "stored",
    [HOSTILE_SYS_ID, f"{SYS_ID}/../../sys_user", f"{SYS_ID}?sysparm_query=", "%2e%2e%2fsys_user", SYS_ID[:31], ""],
    ids=["traversal", "suffix", "query", "encoded", "short", "empty"],
)
def test_attack_a_stored_sys_id_that_is_none_never_reaches_a_request_url(
    stored: str, itsm: tuple[FakeItsm, str]
) -> None:
    """Whatever the outbox holds (a compromised ITSM's answer, a database edited by hand): only 32 hex digits
    become part of a path; the update finds the incident by correlation id instead."""
    fake, url = itsm
    assert connector("servicenow", url).deliver(update(first_record_id=stored)) == FOUND["servicenow"]
    assert fake.paths == ["GET /api/now/table/incident", f"PATCH {BY_SYS_ID}"]


def test_attack_a_hostile_sys_id_in_the_creation_answer_is_not_kept(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    fake.reads = {1: (200, b'{"result": []}')}
    fake.created_sys_id = HOSTILE_SYS_ID
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    assert connector("servicenow", url).deliver(ticket) == Receipt("INC1", None)


TOPDESK_STORED = {"first_record_id": TOPDESK_ID, "first_reference": "I 1"}
"""What the outbox hands an update of a TOPdesk incident this release created: the id TOPdesk returned."""
TD_BY_ID = f"/tas/api/incidents/id/{TOPDESK_ID}"
TD_LOOKUP = "GET /tas/api/incidents"
HOSTILE_TOPDESK_ID = "../../persons"


def test_topdesk_creation_returns_the_incident_id_for_the_updates(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    fake.deleted = True  # no incident yet: the lookup before creating finds nothing
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    assert connector("topdesk", url).deliver(ticket) == Receipt("I 1", TOPDESK_ID)
    assert fake.paths == [TD_LOOKUP, "POST /tas/api/incidents"]


def test_topdesk_an_incident_found_before_creating_returns_its_id(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    assert connector("topdesk", url).deliver(ticket) == Receipt("I 1", TOPDESK_ID)
    assert fake.paths == [TD_LOOKUP]


def test_topdesk_updates_the_incident_by_its_stored_id(itsm: tuple[FakeItsm, str]) -> None:
    """No query by external number (a search of the incidents) per update: the incident is read by its id."""
    fake, url = itsm
    assert connector("topdesk", url).deliver(update(**TOPDESK_STORED)) == "I 1"
    assert fake.paths == [f"GET {TD_BY_ID}", f"GET {TD_BY_ID}/actions", f"PATCH {TD_BY_ID}"]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_attack_a_topdesk_retry_by_id_after_a_lost_answer_does_not_add_the_update_twice(
    itsm: tuple[FakeItsm, str],
) -> None:
    fake, url = itsm
    fake.patches = {1: (504, b'{"error": "gateway timeout"}')}
    td = connector("topdesk", url)
    with pytest.raises(DeliveryError):
        td.deliver(update(**TOPDESK_STORED))
    assert td.deliver(update(**TOPDESK_STORED)) == "I 1"
    assert fake.patch_count == 1
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1
    assert TD_LOOKUP not in fake.paths


def test_topdesk_a_stored_id_answering_404_is_looked_up_once_by_external_number(
    itsm: tuple[FakeItsm, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The stored id names no incident any more, but one carries the external number: the action goes there."""
    fake, url = itsm
    stale = "00000000-1111-4222-8333-444444444444"
    with caplog.at_level(logging.WARNING):
        found = connector("topdesk", url).deliver(update(first_record_id=stale, first_reference="I 1"))
    assert found == Receipt("I 1", TOPDESK_ID)  # the outbox keeps it for the next updates
    assert fake.paths == [
        f"GET /tas/api/incidents/id/{stale}",
        TD_LOOKUP,
        f"GET {TD_BY_ID}/actions",
        f"PATCH {TD_BY_ID}",
    ]
    assert "not found by its stored id" in caplog.text
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_topdesk_an_id_the_lookup_finds_that_is_no_uuid_is_used_once_and_not_returned_to_keep(
    itsm: tuple[FakeItsm, str],
) -> None:
    fake, url = itsm
    fake.topdesk_id = "t1"  # passes the check for a path segment, but is no TOPdesk UUID
    assert connector("topdesk", url).deliver(update(**TOPDESK_STORED)) == "I 1"
    assert fake.paths[-1] == "PATCH /tas/api/incidents/id/t1"


def test_topdesk_an_incident_deleted_since_needs_attention_with_the_reason(itsm: tuple[FakeItsm, str]) -> None:
    """Deleted or archived away: no retry brings it back, so the update is parked with why instead of retried."""
    fake, url = itsm
    fake.deleted = True
    with pytest.raises(PermanentDeliveryError, match=f"incident fleetpulse-ticket-1 is gone: its id {TOPDESK_ID}"):
        connector("topdesk", url).deliver(update(**TOPDESK_STORED))
    assert fake.paths == [f"GET {TD_BY_ID}", TD_LOOKUP]  # one lookup, nothing added


def test_topdesk_an_update_without_a_stored_id_is_retried_until_the_incident_exists(
    itsm: tuple[FakeItsm, str],
) -> None:
    fake, url = itsm
    fake.deleted = True
    with pytest.raises(DeliveryError, match="not found") as raised:
        connector("topdesk", url).deliver(update())
    assert not isinstance(raised.value, PermanentDeliveryError)


@pytest.mark.parametrize(
    "stored",
    [
        HOSTILE_TOPDESK_ID,
        f"{TOPDESK_ID}/../../persons",
        f"{TOPDESK_ID}?query=",
        f"{TOPDESK_ID}\n",
        "%2e%2e%2fpersons",
        TOPDESK_ID.replace("-", ""),
        TOPDESK_ID[:35],
        "t1",
        "",
    ],
    ids=["traversal", "suffix", "query", "newline", "encoded", "no-dashes", "short", "not-uuid", "empty"],
)
def test_attack_a_stored_topdesk_id_that_is_no_uuid_never_reaches_a_request_url(
    stored: str, itsm: tuple[FakeItsm, str]
) -> None:
    """Whatever the outbox holds (a compromised ITSM's answer, a database edited by hand): only a UUID
    becomes part of a path; the update finds the incident by external number instead."""
    fake, url = itsm
    connector("topdesk", url).deliver(update(first_record_id=stored))
    assert fake.paths == [TD_LOOKUP, f"GET {TD_BY_ID}/actions", f"PATCH {TD_BY_ID}"]


@pytest.mark.parametrize("hostile", [HOSTILE_TOPDESK_ID, "../operators/id/1", f"{TOPDESK_ID}/../../persons", 7])
def test_attack_a_hostile_id_in_the_topdesk_creation_answer_is_not_kept(
    hostile: object, itsm: tuple[FakeItsm, str]
) -> None:
    fake, url = itsm
    fake.deleted = True
    fake.created_topdesk_id = hostile  # type: ignore[assignment]
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    assert connector("topdesk", url).deliver(ticket) == Receipt("I 1", None)


def topdesk_trail(count: int, update_at: int) -> list[str]:
    """``count`` actions, newest first, the update's own (with its marker) at index ``update_at``."""
    trail = [f"Called the user back ({n})" for n in range(count)]
    trail[update_at] = update().note_text()
    return trail


def action_pages(fake: FakeItsm) -> list[str]:
    return [query["start"][0] for query in fake.queries if "start" in query]


def test_topdesk_finds_the_update_beyond_the_first_hundred_actions(itsm: tuple[FakeItsm, str]) -> None:
    """250 actions, the earlier copy of this update at 180: a retry pages to it and adds nothing."""
    fake, url = itsm
    fake.notes = topdesk_trail(250, update_at=180)
    assert connector("topdesk", url).deliver(update()) == FOUND["topdesk"]
    assert fake.patch_count == 0
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1
    assert action_pages(fake) == ["0", "100"]  # newest first, stopped at the page holding it


def test_topdesk_reads_every_page_of_a_long_trail_without_the_update(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    fake.notes = topdesk_trail(250, update_at=0)[1:]  # 249 actions, none of them this update
    connector("topdesk", url).deliver(update())
    assert action_pages(fake) == ["0", "100", "200"]
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


def test_topdesk_checks_at_most_ten_pages_of_actions_and_says_so(
    itsm: tuple[FakeItsm, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A documented limit: past the newest 1,000 actions the update is added unchecked, with a warning."""
    fake, url = itsm
    fake.notes = topdesk_trail(1500, update_at=1200)
    with caplog.at_level(logging.WARNING):
        connector("topdesk", url).deliver(update())
    assert action_pages(fake) == [str(start) for start in range(0, 1000, 100)]
    assert fake.patch_count == 1
    (warning,) = [r for r in caplog.records if "more actions than are checked" in r.getMessage()]
    assert warning.fields["actions_checked"] == 1000  # type: ignore[attr-defined]


def test_attack_a_topdesk_that_never_ends_its_pages_costs_ten_requests(itsm: tuple[FakeItsm, str]) -> None:
    """An answer that ignores ``start`` and always fills the page cannot keep the connector reading."""
    fake, url = itsm
    page = json.dumps([{"id": f"a{n}", "memoText": "again"} for n in range(100)]).encode()
    fake.reads = {n: (200, page) for n in range(1, 100)}
    connector("topdesk", url).deliver(update())
    assert fake.read_count == 10
    assert fake.patch_count == 1


def test_webhook_updates_carry_their_id_and_tickets_keep_their_fields(itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    hook = Webhook(WebhookConfig(name="hook", url=f"{url}/hooks"))
    ticket = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
    hook.deliver(ticket)
    hook.deliver(update(first_reference="fleetpulse-ticket-1"))
    sent_ticket, sent_update = (json.loads(body) for body in fake.posted)
    assert set(sent_ticket) == {"subject", "dedup_key", "title", "body", "urgency", "ticket", "storm"}
    assert sent_update["update_id"] == "fleetpulse-ticket-1-replan-1"
    assert sent_update["first_reference"] == "fleetpulse-ticket-1"


FIRST_ID = "<179640433176.20622.31304837538138.fleetpulse-ticket-1@fleetpulse>"
FIRST_TITLE = "[fleetpulse] high: battery of pc-1 likely to fail"


def mailed(notification: Notification, times: int = 1) -> list[Any]:
    messages: list[bytes] = []
    with listener(relay(lambda conn: conn.sendall(b"221 bye\r\n"), messages)) as port:
        config = SmtpConfig(name="mail", host="127.0.0.1", port=port, tls="none", recipients=["it@example.org"])
        for _ in range(times):
            Smtp(config).deliver(notification)
    return [message_from_bytes(m, policy=SMTP) for m in messages]


def test_a_mailed_update_is_a_reply_to_the_first_mail() -> None:
    first, again = mailed(update(first_reference=FIRST_ID, first_title=FIRST_TITLE), times=2)
    assert first["Subject"] == f"Re: {FIRST_TITLE}"
    assert first["In-Reply-To"].strip() == FIRST_ID  # strip: a long header comes folded
    assert first["References"].strip() == FIRST_ID
    body = first.get_content().replace("\r\n", "\n")
    assert body.startswith("[fleetpulse] ticket 1 re-planned: Replace the battery\n")
    assert "Previously recommended: Replace the laptop" in body
    # a retry (the answer to DATA was lost) is the same message: a receiver that drops duplicates can
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != FIRST_ID


def test_a_mailed_update_without_a_stored_first_message_id_still_names_the_ticket() -> None:
    (message,) = mailed(update(first_reference=None, first_title=None))
    assert message["Subject"] == "Re: [fleetpulse] ticket 1 re-planned: Replace the battery"
    assert message["In-Reply-To"] is None
    assert message["X-Fleetpulse-Delivery"] == "fleetpulse-ticket-1"


@pytest.mark.parametrize(
    "reference",
    ["INC0010001", "<a@b>\r\nBcc: victim@example.org", "<a b@c>", "<" + "a" * 300 + "@fleetpulse>"],
    ids=["incident-number", "header-injection", "space", "long"],
)
def test_attack_a_stored_reference_that_is_no_message_id_is_not_threaded_on(reference: str) -> None:
    """The stored reference is whatever the target returned under this connector's name (another kind's
    incident number after a configuration change, say): only a plain ``<id@domain>`` becomes a header."""
    hostile_title = f"{FIRST_TITLE}\r\nBcc: victim@example.org"
    (message,) = mailed(update(first_reference=reference, first_title=hostile_title))
    assert message["In-Reply-To"] is None
    assert message["References"] is None
    assert message["Bcc"] is None
    assert "victim" not in "".join(message.keys())

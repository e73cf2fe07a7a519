"""Updates of an incident the ITSM already has (a re-planned action, a lifecycle change) go through the
outbox, so they are sent at least once: a retry after a lost answer must not add the same note twice
where the ITSM lets the connector look (ServiceNow's work notes, TOPdesk's actions), and a follow-up
mail must thread under the first one. Answers are hostile or broken at times; credentials never leak.

The ITSM is a small fake on 127.0.0.1 that keeps the notes it was sent; the relay a raw socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import SMTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.connectors.config import ServiceNowConfig, SmtpConfig, TopdeskConfig, WebhookConfig
from fleetpulse.alerts.connectors.http import ServiceNow, Topdesk, Webhook
from fleetpulse.alerts.connectors.mail import Smtp
from tests.harness import http_server, listener
from tests.unit.test_connectors_smtp_quit import relay

PASSWORD = "itsm-pw-31415"
Scripted = tuple[int, bytes]


@dataclass
class FakeItsm:
    """One incident (``INC1``/``s1`` in ServiceNow, ``I 1``/``t1`` in TOPdesk) and its notes, newest first.

    ``patches`` scripts the answer to a PATCH (1 = the first) after it was applied (a lost answer);
    ``reads`` scripts the answer to the GET of the incident's notes instead of the real one."""

    notes: list[str] = field(default_factory=list)
    patches: dict[int, Scripted] = field(default_factory=dict)
    reads: dict[int, Scripted] = field(default_factory=dict)
    patch_count: int = 0
    read_count: int = 0
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    posted: list[bytes] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
                fake.queries.append(query)
                if path == "/api/now/table/incident":
                    fake.read_count += 1
                    if fake.read_count in fake.reads:
                        self.answer(*fake.reads[fake.read_count])
                        return
                    record: dict[str, Any] = {"number": "INC1", "sys_id": "s1"}
                    if "work_notes" in query.get("sysparm_fields", [""])[0]:
                        # the journal as its display value: every entry, newest first, one string
                        record["work_notes"] = "".join(
                            f"2026-11-02 10:00:00 - svc (Work notes)\n{n}\n\n" for n in fake.notes
                        )
                    self.answer(200, json.dumps({"result": [record]}).encode())
                elif path == "/tas/api/incidents":
                    self.answer(200, json.dumps([{"id": "t1", "number": "I 1"}]).encode())
                elif path == "/tas/api/incidents/id/t1/actions":
                    fake.read_count += 1
                    if fake.read_count in fake.reads:
                        self.answer(*fake.reads[fake.read_count])
                        return
                    actions = [{"id": f"a{i}", "memoText": n} for i, n in enumerate(fake.notes)]
                    self.answer(200, json.dumps(actions).encode()) if actions else self.answer(204, b"")
                else:
                    self.answer(404, b"{}")

            def do_PATCH(self) -> None:
                fake.patch_count += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.notes.insert(0, body.get("work_notes") or body["action"])
                self.answer(*fake.patches.get(fake.patch_count, (200, b"{}")))

            def do_POST(self) -> None:
                fake.posted.append(self.rfile.read(int(self.headers["Content-Length"])))
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


REFERENCE = {"servicenow": "INC1", "topdesk": "I 1"}
KINDS = ["servicenow", "topdesk"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_update_is_one_note_on_the_incident_with_its_marker(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    fake, url = itsm
    assert connector(kind, url).deliver(update()) == REFERENCE[kind]
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
    assert itsm_connector.deliver(update()) == REFERENCE[kind]
    assert itsm_connector.deliver(update()) == REFERENCE[kind]
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
    assert td.deliver(update()) == "I 1"
    assert fake.marked("fleetpulse-ticket-1-replan-1") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_an_account_that_may_not_read_the_notes_notes_anyway(kind: str, itsm: tuple[FakeItsm, str]) -> None:
    """A documented limit: without read access to the notes a retry after a lost answer can add one twice."""
    fake, url = itsm
    if kind == "servicenow":  # the journal comes back empty or as a non-text value
        fake.reads = {1: (200, json.dumps({"result": [{"number": "INC1", "sys_id": "s1", "work_notes": 7}]}).encode())}
    else:
        fake.reads = {1: (403, b'{"message": "no access"}')}
    assert connector(kind, url).deliver(update()) == REFERENCE[kind]
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

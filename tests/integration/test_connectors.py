"""ITSM connectors against local recording HTTP and SMTP servers, and the outbox across an ITSM outage.

One conformance test runs every connector kind through the same ``Connector`` interface;
kind-specific tests pin the wire format each ITSM expects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from pydantic import TypeAdapter

from fleetpulse.alerts.connectors import ConnectorConfig, DeliveryError, build
from fleetpulse.alerts.connectors.base import Receipt, ticket_notification, update_notification
from fleetpulse.alerts.labels import LabelPublisher
from fleetpulse.alerts.outbox import deliver_due, retry_policy
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.codec import decode
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import TicketOutcome, TicketState
from tests.alerts_support import NOW, make_alert, make_inventory, service
from tests.harness import free_port, self_signed_tls

pytestmark = pytest.mark.integration
SYS_ID = "46d44a23a9fe19810012d100cca80666"


@dataclass
class HttpRecord:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingHttp:
    port: int
    status: int = 201
    answer: dict[str, Any] = field(default_factory=dict)
    lookup_status: int = 200
    lookup_answer: Any = None
    """None: nothing found, as each ITSM says it (ServiceNow an empty ``result``, TOPdesk an empty list)."""
    requests: list[HttpRecord] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append(HttpRecord("POST", self.path, dict(self.headers.items()), body))
                payload = json.dumps(recorder.answer).encode()
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                recorder.requests.append(HttpRecord("GET", self.path, dict(self.headers.items()), b""))
                answer = recorder.lookup_answer
                if answer is None:
                    answer = {"result": []} if self.path.startswith("/api/now/") else []
                if self.path.startswith("/api/now/table/incident/") and isinstance(answer, dict):
                    found = answer.get("result") or [{}]  # a record by its sys_id: ServiceNow's result is the record
                    answer = {"result": found[0]}
                payload = b"" if recorder.lookup_status == 204 else json.dumps(answer).encode()
                self.send_response(recorder.lookup_status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append(HttpRecord("PATCH", self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class RecordingSmtp:
    """Just enough SMTP (RFC 5321) to accept mail and keep it: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    port: int
    tls: ssl.SSLContext | None = None
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    tls_used: list[bool] = field(default_factory=list)
    server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        recorder = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())
                self.wfile.flush()

            def handle(self) -> None:
                sender, rcpts, secure = "", list[str](), False
                self.reply("220 recorder ESMTP")
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    verb = command[:4].upper()
                    if verb == "EHLO" and recorder.tls is not None:
                        self.reply("250-recorder")
                        self.reply("250-AUTH PLAIN" if secure else "250-STARTTLS")
                        self.reply("250 8BITMIME")
                    elif verb in ("EHLO", "HELO"):
                        self.reply("250 recorder")
                    elif command.upper() == "STARTTLS" and recorder.tls is not None:
                        self.reply("220 go ahead")
                        self.connection = recorder.tls.wrap_socket(self.connection, server_side=True)
                        self.rfile = self.connection.makefile("rb")
                        self.wfile = self.connection.makefile("wb")
                        secure = True
                    elif verb == "AUTH":
                        recorder.logins.append(base64.b64decode(command.split()[2]).decode())
                        self.reply("235 authenticated")
                    elif verb == "MAIL":
                        sender, rcpts = command.split(":", 1)[1].strip(" <>"), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        rcpts.append(command.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        recorder.messages.append((sender, rcpts, message_from_bytes(data)))
                        recorder.tls_used.append(secure)
                        self.reply("250 queued")
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"fleetpulse-webhook-test-key-32b!").decode()


def connector_config(kind: str, http: RecordingHttp, smtp: RecordingSmtp) -> ConnectorConfig:
    """Each kind against the local recorders, which speak plain HTTP/SMTP: credentials need ``allow_insecure``."""
    configs: dict[str, dict[str, Any]] = {
        "webhook": {"kind": "webhook", "name": "hook", "url": f"{http.url}/hooks/fleet", "secret": WEBHOOK_SECRET},
        "servicenow": {
            "kind": "servicenow",
            "name": "snow",
            "instance_url": http.url,
            "username": "svc",
            "password": "pw",
            "allow_insecure": True,
        },
        "topdesk": {
            "kind": "topdesk",
            "name": "td",
            "url": http.url,
            "username": "op",
            "app_password": "app-pw",
            "allow_insecure": True,
        },
        "smtp": {
            "kind": "smtp",
            "name": "mail",
            "port": smtp.port,
            "tls": "none",
            "recipients": ["it@example.org", "fm@example.org"],
        },
    }
    return TypeAdapter(ConnectorConfig).validate_python(configs[kind])


def sample_notification(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = TicketStore.open(f"sqlite:///{tmp_path}/n.db")
    svc = service(store)
    svc.apply_inventory(make_inventory())
    svc.apply_alert(make_alert(), NOW)
    note = ticket_notification(store.list_tickets()[0].to_contract())
    store.close()
    return note


def reference(delivered: str | Receipt | None) -> str | None:
    """The reference a connector returned, with or without the record id beside it."""
    return delivered.reference if isinstance(delivered, Receipt) else delivered


@pytest.mark.parametrize("kind", ["webhook", "servicenow", "topdesk", "smtp"])
def test_every_connector_delivers_one_incident(
    kind: str, http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """Conformance: the same notification through each kind arrives exactly once, with title and dedup key."""
    http_server.answer = {"result": {"sys_id": "abc", "number": "INC0010001"}, "id": "td-1", "number": "I 2611 001"}
    connector = build(connector_config(kind, http_server, smtp_server))
    note = sample_notification(tmp_path)
    ref = connector.deliver(note)
    assert ref
    posts = [r.body.decode() for r in http_server.requests if r.method == "POST"]
    received = posts + [m.as_string() for _, _, m in smtp_server.messages]
    assert len(received) == 1
    assert note.dedup_key in received[0]
    assert "pc-0001" in received[0]


def test_webhook_signs_id_timestamp_and_body(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """Standard Webhooks: ``v1,`` + base64 HMAC-SHA256 over ``webhook-id.webhook-timestamp.body``."""
    build(connector_config("webhook", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    request = http_server.requests[0]
    assert request.path == "/hooks/fleet"
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert json.loads(request.body)["ticket"]["recommended_action"].startswith("Replace the SSD")


def test_servicenow_table_api_format(http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path) -> None:
    http_server.answer = {"result": {"sys_id": SYS_ID, "number": "INC0010001"}}
    ref = build(connector_config("servicenow", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    assert ref == Receipt("INC0010001", SYS_ID)  # the number for people, the sys_id for updates
    request = http_server.requests[0]
    assert request.method == "GET"
    assert "sysparm_query=correlation_id%3Dfleetpulse-ticket-1" in request.path
    request = http_server.requests[1]
    assert request.path == "/api/now/table/incident"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"svc:pw").decode()
    record = json.loads(request.body)
    assert record["urgency"] == "1"
    assert record["category"] == "hardware"
    assert record["correlation_id"] == "fleetpulse-ticket-1"
    assert "Recommended action" in record["description"]


def test_topdesk_incident_format(http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path) -> None:
    incident_id = "4f2c1d7e-9a0b-4c3d-8e5f-6a7b8c9d0e1f"
    http_server.answer = {"id": incident_id, "number": "I 2611 001"}
    http_server.lookup_status = 204  # TOPdesk answers 204 when a query finds nothing
    ref = build(connector_config("topdesk", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    assert ref == Receipt("I 2611 001", incident_id)  # the id: what updates address the incident by
    assert "query=externalNumber%3D%3Dfleetpulse-ticket-1" in http_server.requests[0].path
    request = http_server.requests[1]
    assert request.path == "/tas/api/incidents"
    record = json.loads(request.body)
    assert len(record["briefDescription"]) <= 80
    assert record["externalNumber"] == "fleetpulse-ticket-1"
    assert record["priority"] == {"name": "P1"}
    assert record["caller"] == {"dynamicName": "fleetpulse"}


def test_email_message(http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path) -> None:
    build(connector_config("smtp", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    sender, rcpts, message = smtp_server.messages[0]
    assert sender == "fleetpulse@localhost"
    assert rcpts == ["it@example.org", "fm@example.org"]
    assert message["Subject"].startswith("[fleetpulse] critical: disk sn1 of pc-0001")
    assert "56 reallocated sectors" in message.get_payload()


@pytest.mark.parametrize(
    ("kind", "existing"),
    [
        ("servicenow", {"result": [{"number": "INC0000042", "sys_id": "x"}]}),
        ("topdesk", [{"id": "9", "number": "I 42"}]),
    ],
)
def test_retry_after_a_lost_answer_finds_the_incident_instead_of_duplicating_it(
    kind: str, existing: Any, http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    http_server.lookup_answer = existing
    ref = build(connector_config(kind, http_server, smtp_server)).deliver(sample_notification(tmp_path))
    assert reference(ref) in ("INC0000042", "I 42")
    assert [r.method for r in http_server.requests] == ["GET"]


@pytest.mark.parametrize("kind", ["servicenow", "topdesk"])
@pytest.mark.parametrize("status", [403, 404])
def test_lookup_refused_still_creates_the_incident(
    kind: str, status: int, http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """An account without read right on incidents: the lookup is skipped (logged), the incident created."""
    http_server.lookup_status = status
    http_server.answer = {"result": {"number": "INC0010003"}, "number": "I 2611 003"}
    ref = build(connector_config(kind, http_server, smtp_server)).deliver(sample_notification(tmp_path))
    assert reference(ref) == {"servicenow": "INC0010003", "topdesk": "I 2611 003"}[kind]
    assert [r.method for r in http_server.requests] == ["GET", "POST"]


@pytest.mark.parametrize("kind", ["webhook", "servicenow", "topdesk"])
def test_http_errors_become_delivery_errors(
    kind: str, http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    http_server.status = 503
    with pytest.raises(DeliveryError, match="HTTP 503"):
        build(connector_config(kind, http_server, smtp_server)).deliver(sample_notification(tmp_path))


@pytest.mark.parametrize("kind", ["webhook", "servicenow", "topdesk", "smtp"])
def test_unreachable_targets_become_delivery_errors(kind: str, tmp_path: Path) -> None:
    down_http, down_smtp = RecordingHttp(free_port()), RecordingSmtp(free_port())
    with pytest.raises(DeliveryError):
        build(connector_config(kind, down_http, down_smtp)).deliver(sample_notification(tmp_path))


def test_outbox_loses_nothing_while_the_itsm_is_down(tmp_path: Path) -> None:
    """Tickets opened during an outage are retried with backoff and delivered once the servers are back."""
    http, smtp = RecordingHttp(free_port()), RecordingSmtp(free_port())
    outbox_settings = OutboxSettings(backoff_base=timedelta(seconds=5), backoff_max=timedelta(minutes=1))
    configs = [connector_config("servicenow", http, smtp), connector_config("smtp", http, smtp)]
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    svc = service(store, connectors=[c.model_dump(mode="json") for c in configs])
    # pydantic masks secrets in JSON dumps; rebuild the connectors from the real configs
    connectors = {c.name: build(c) for c in configs}
    for n in range(3):
        svc.apply_alert(make_alert(f"pc-{n}"), NOW)

    first = deliver_due(store, connectors, None, outbox_settings, NOW)
    # one failed attempt per target, the target's other rows wait with it instead of timing out one by one
    assert (first.delivered, first.failed, first.skipped) == (0, 2, 4)
    for target in ("snow", "mail"):  # each target's rows wait together, 2.5-5 s (first delay, jittered)
        (retry_at,) = {r.next_attempt_at for r in store.outbox() if r.target == target}
        assert NOW + timedelta(seconds=2.5) <= retry_at <= NOW + timedelta(seconds=5)
    assert sorted(r.attempts for r in store.outbox()) == [0, 0, 0, 0, 1, 1]
    assert deliver_due(store, connectors, None, outbox_settings, NOW + timedelta(seconds=1)).failed == 0  # backing off
    for k in range(2, 6):  # still down: the delay doubles up to the cap, rows stay pending
        deliver_due(store, connectors, None, outbox_settings, NOW + timedelta(hours=k))
    assert all(r.delivered_at is None and r.last_error for r in store.outbox() if r.attempts)
    assert not any(r.needs_attention for r in store.outbox())  # unreachable is transient
    assert retry_policy(outbox_settings).ceiling(5) == 60.0
    assert retry_policy(outbox_settings).ceiling(2) == 10.0

    http.answer = {"result": {"number": "INC0010002"}}
    http.start()
    smtp.start()
    try:
        later = NOW + timedelta(hours=6)
        report = deliver_due(store, connectors, None, outbox_settings, later)
        assert (report.delivered, report.failed) == (6, 0)
        posts = [r for r in http.requests if r.method == "POST"]
        assert len(posts) == 3
        assert len(smtp.messages) == 3
        assert {r.external_ref for r in store.outbox() if r.target == "snow"} == {"INC0010002"}
        assert deliver_due(store, connectors, None, outbox_settings, later + timedelta(hours=1)).delivered == 0
        assert len([r for r in http.requests if r.method == "POST"]) == 3
    finally:
        http.stop()
        smtp.stop()
        store.close()


def test_outcomes_reach_the_labels_topic(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    svc = service(store)
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.apply_alert(make_alert("pc-2"), NOW)
    svc.transition([1, 2], TicketState.APPROVED, "alice", NOW)
    svc.transition([1], TicketState.ORDERED, "alice", NOW)
    svc.transition([1], TicketState.DONE, "bob", NOW, outcome="confirmed_fault")
    svc.transition([2], TicketState.DISMISSED, "carol", NOW)
    publisher = LabelPublisher(kafka_settings)
    try:
        report = deliver_due(store, {}, publisher, OutboxSettings(), NOW)
    finally:
        publisher.close()
        store.close()
    assert report.delivered == 2
    consumer = KafkaConsumer(
        Topics(prefix=kafka_settings.topic_prefix).labels,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    outcomes = sorted((decode(m.value, TicketOutcome) for m in consumer), key=lambda o: o.ticket_id)
    consumer.close()
    assert [(o.device_id, o.outcome, o.recorded_by, o.model_version) for o in outcomes] == [
        ("pc-1", "confirmed_fault", "bob", "1.2.0"),
        ("pc-2", "false_alarm", "carol", "1.2.0"),
    ]


@pytest.mark.parametrize(
    ("kind", "existing", "patched_path", "field"),
    [
        (
            "servicenow",
            {"result": [{"number": "INC7", "sys_id": SYS_ID}]},
            f"/api/now/table/incident/{SYS_ID}",
            "work_notes",
        ),
        ("topdesk", [{"id": "9f1e", "number": "I 7"}], "/tas/api/incidents/id/9f1e", "action"),
    ],
)
def test_lifecycle_changes_are_noted_on_the_itsm_incident(
    kind: str,
    existing: Any,
    patched_path: str,
    field: str,
    http_server: RecordingHttp,
    smtp_server: RecordingSmtp,
    tmp_path: Path,
) -> None:
    config = connector_config(kind, http_server, smtp_server)
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    svc = service(store, connectors=[{"kind": "webhook", "name": config.name, "url": "http://127.0.0.1:9/"}])
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.transition([1], TicketState.APPROVED, "anna", NOW, note="swap next week")
    svc.transition([1], TicketState.DISMISSED, "anna", NOW, outcome="no_fault_found")
    connector = build(config)
    http_server.lookup_answer = existing
    report = deliver_due(store, {config.name: connector}, None, OutboxSettings(), NOW)
    store.close()
    assert report.delivered == 3  # creation (found by the lookup: no duplicate) + two updates
    patches = [r for r in http_server.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == [patched_path, patched_path]
    first, second = (json.loads(r.body)[field] for r in patches)
    assert "moved from open to approved by anna" in first
    assert "swap next week" in first
    assert "Outcome: no fault found" in second
    assert not [r for r in http_server.requests if r.method == "POST"]


def replanned_through_the_outbox(kind: str, http_server: RecordingHttp, smtp_server: RecordingSmtp, db: Path) -> None:
    """A ticket delivered while its plan was a repair, re-planned to a warranty claim by later device facts."""
    config = connector_config(kind, http_server, smtp_server)
    store = TicketStore.open(f"sqlite:///{db}")
    svc = service(store, connectors=[{"kind": "webhook", "name": config.name, "url": "http://127.0.0.1:9/"}])
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2025, 3, 1)), now=NOW)
    svc.apply_alert(make_alert("pc-1"), NOW)
    connector = build(config)
    assert deliver_due(store, {config.name: connector}, None, OutboxSettings(), NOW).delivered == 1
    later = NOW + timedelta(hours=1)
    svc.apply_inventory(make_inventory("pc-1", warranty_end=date(2030, 1, 1), updated_at=later), now=later)
    report = deliver_due(store, {config.name: connector}, None, OutboxSettings(), later)
    store.close()
    assert report.delivered == 1


@pytest.mark.parametrize(
    ("kind", "existing", "patched_path", "field"),
    [
        (
            "servicenow",
            {"result": [{"number": "INC7", "sys_id": SYS_ID, "work_notes": ""}]},
            f"/api/now/table/incident/{SYS_ID}",
            "work_notes",
        ),
        ("topdesk", [{"id": "9f1e", "number": "I 7"}], "/tas/api/incidents/id/9f1e", "action"),
    ],
)
def test_a_replanned_action_is_noted_on_the_itsm_incident(
    kind: str,
    existing: Any,
    patched_path: str,
    field: str,
    http_server: RecordingHttp,
    smtp_server: RecordingSmtp,
    tmp_path: Path,
) -> None:
    http_server.lookup_answer = existing
    replanned_through_the_outbox(kind, http_server, smtp_server, tmp_path / "t.db")
    (patch,) = [r for r in http_server.requests if r.method == "PATCH"]
    assert patch.path == patched_path
    note = json.loads(patch.body)[field]
    assert "re-planned" in note
    assert "Recommended action now:" in note
    assert "[fleetpulse update fleetpulse-ticket-1-replan-1]" in note
    assert not [r for r in http_server.requests if r.method == "POST"]


def test_a_replanned_action_is_mailed_as_a_reply_to_the_first_mail(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    replanned_through_the_outbox("smtp", http_server, smtp_server, tmp_path / "t.db")
    (_, _, first), (_, rcpts, reply) = smtp_server.messages
    assert rcpts == ["it@example.org", "fm@example.org"]
    assert reply["Subject"] == f"Re: {first['Subject']}"
    assert reply["In-Reply-To"].strip() == first["Message-ID"].strip()
    assert reply["References"].strip() == first["Message-ID"].strip()
    assert "Recommended action now:" in reply.get_payload()


def test_update_waits_until_the_incident_exists(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    store = TicketStore.open(f"sqlite:///{tmp_path}/n.db")
    svc = service(store)
    svc.apply_alert(make_alert(), NOW)
    ticket = store.list_tickets()[0].to_contract()
    store.close()
    note = update_notification(ticket, "open", "anna", "", None)
    with pytest.raises(DeliveryError, match="not found"):
        build(connector_config("servicenow", http_server, smtp_server)).deliver(note)


def test_storm_members_without_an_incident_get_no_updates(tmp_path: Path) -> None:
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    svc = service(
        store,
        storm={"threshold": 2},
        connectors=[{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/"}],
    )
    svc.apply_alert(make_alert("pc-1"), NOW)  # alone: gets its own incident
    svc.apply_alert(make_alert("pc-2"), NOW)  # second of the key: storm, one problem incident
    svc.transition([1, 2], TicketState.APPROVED, "anna", NOW)
    subjects = sorted((r.subject, r.dedup_key) for r in store.outbox())
    store.close()
    assert subjects == [
        ("storm", subjects[0][1]),
        ("ticket", "fleetpulse-ticket-1"),
        ("update", "fleetpulse-ticket-1-approved"),
    ]


@pytest.fixture
def relay_tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (a relay with a private CA) and its server context."""
    return self_signed_tls(tmp_path)


def starttls_mail(port: int, **overrides: object) -> ConnectorConfig:
    """An SMTP connector that logs in after STARTTLS (``overrides``: host, CA file)."""
    settings = {
        "kind": "smtp",
        "name": "mail",
        "port": port,
        "tls": "starttls",
        "username": "fleetpulse",
        "password": "relay-pw",
        "recipients": ["it@example.org"],
        **overrides,
    }
    return TypeAdapter(ConnectorConfig).validate_python(settings)


def test_email_over_starttls_with_login(relay_tls: tuple[Path, ssl.SSLContext], tmp_path: Path) -> None:
    """A relay with a private CA: STARTTLS first, then AUTH PLAIN, then the message, all encrypted."""
    cert, tls = relay_tls
    relay = RecordingSmtp(free_port(), tls=tls)
    relay.start()
    try:
        config = starttls_mail(relay.port, host="127.0.0.1", ssl_cafile=str(cert))
        build(config).deliver(sample_notification(tmp_path))
    finally:
        relay.stop()
    assert relay.logins == ["\x00fleetpulse\x00relay-pw"]
    assert relay.tls_used == [True]
    assert relay.messages[0][2]["Subject"].startswith("[fleetpulse]")


def test_email_refuses_a_relay_it_cannot_verify(relay_tls: tuple[Path, ssl.SSLContext], tmp_path: Path) -> None:
    _cert, tls = relay_tls
    relay = RecordingSmtp(free_port(), tls=tls)
    relay.start()
    try:
        config = starttls_mail(relay.port)
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            build(config).deliver(sample_notification(tmp_path))
    finally:
        relay.stop()
    assert relay.logins == []  # the password never left the client

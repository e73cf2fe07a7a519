"""Attacks on the ITSM links: replayed or altered webhooks, credentials in clear, a relay that
strips STARTTLS. Run against the local recording HTTP/SMTP servers of test_connectors."""

from __future__ import annotations

import base64
import re
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from fleetpulse.alerts.connectors import ConnectorConfig, DeliveryError, build
from fleetpulse.alerts.connectors.base import Connector, PermanentDeliveryError, Receipt
from fleetpulse.alerts.connectors.config import SmtpConfig
from fleetpulse.redact import MAX_ERROR_CHARS
from tests.harness import free_port, self_signed_tls
from tests.integration.test_connectors import (
    WEBHOOK_SECRET,
    RecordingHttp,
    RecordingSmtp,
    connector_config,
    sample_notification,
)

pytestmark = pytest.mark.integration


PRODUCTION_MD = Path(__file__).resolve().parents[2] / "deploy" / "production.md"
Verify = Callable[..., bool]


def documented_verifier() -> Verify:
    """The receiver's recipe exactly as deploy/production.md shows it."""
    text = PRODUCTION_MD.read_text(encoding="utf-8")
    section = text[text.index("### Verifying webhook deliveries") :]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PRODUCTION_MD), "exec"), namespace)
    verify: Verify = namespace["verify_webhook"]
    return verify


@pytest.fixture
def delivery(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> tuple[dict[str, str], bytes, int]:
    """One real signed delivery as the receiver got it: headers, raw body, its timestamp."""
    build(connector_config("webhook", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    (request,) = http_server.requests
    return request.headers, request.body, int(request.headers["webhook-timestamp"])


def test_the_documented_recipe_accepts_a_real_delivery(delivery: tuple[dict[str, str], bytes, int]) -> None:
    headers, body, _stamp = delivery
    assert documented_verifier()(WEBHOOK_SECRET, headers, body)


def test_a_captured_delivery_replayed_later_fails(delivery: tuple[dict[str, str], bytes, int]) -> None:
    verify = documented_verifier()
    headers, body, stamp = delivery
    assert verify(WEBHOOK_SECRET, headers, body, now=stamp + 60)
    assert not verify(WEBHOOK_SECRET, headers, body, now=stamp + 600)  # replayed ten minutes later
    assert not verify(WEBHOOK_SECRET, headers, body, now=stamp - 600)  # timestamp from the future


def test_an_altered_delivery_fails(delivery: tuple[dict[str, str], bytes, int]) -> None:
    verify = documented_verifier()
    headers, body, stamp = delivery
    fresh = stamp + 3600
    restamped = headers | {"webhook-timestamp": str(fresh)}  # the replayer re-dates the capture
    assert not verify(WEBHOOK_SECRET, restamped, body, now=fresh)
    assert not verify(WEBHOOK_SECRET, headers | {"webhook-id": "msg_other"}, body, now=stamp)
    assert not verify(WEBHOOK_SECRET, headers, body.replace(b"pc-0001", b"pc-0666"), now=stamp)
    other_secret = "whsec_" + base64.b64encode(b"an-attacker-guessing-the-key-32b").decode()
    assert not verify(other_secret, headers, body, now=stamp)
    assert not verify(WEBHOOK_SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, body, now=stamp)


def test_a_retry_keeps_its_webhook_id_and_two_messages_never_share_one(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """Receivers deduplicate on webhook-id: a retried message carries the same id, a new message a new one."""
    connector = build(connector_config("webhook", http_server, smtp_server))
    note = sample_notification(tmp_path)
    connector.deliver(note)
    time.sleep(1.1)  # a later retry: new timestamp, new signature, same id
    connector.deliver(note)
    connector.deliver(note.model_copy(update={"body": note.body + "\nupdated"}))
    first, retry, other = (r.headers for r in http_server.requests)
    assert first["webhook-id"] == retry["webhook-id"] != other["webhook-id"]
    assert first["webhook-timestamp"] != retry["webhook-timestamp"]
    assert first["webhook-signature"] != retry["webhook-signature"]


@pytest.mark.parametrize(
    "config",
    [
        {
            "kind": "servicenow",
            "name": "snow",
            "instance_url": "http://itsm.example.org",
            "username": "u",
            "password": "p",
        },
        {"kind": "topdesk", "name": "td", "url": "http://td.example.org", "username": "u", "app_password": "p"},
        {"kind": "smtp", "name": "mail", "tls": "none", "username": "u", "password": "p", "recipients": ["a@b"]},
    ],
    ids=["servicenow-http", "topdesk-http", "smtp-plain-login"],
)
def test_credentials_in_clear_are_refused_at_config_load(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="allow_insecure") as raised:
        TypeAdapter(ConnectorConfig).validate_python(config)
    assert "'p'" not in str(raised.value.errors(include_input=False))
    assert TypeAdapter(ConnectorConfig).validate_python(config | {"allow_insecure": True}).allow_insecure


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "webhook", "name": "hook", "url": "https://user:pw@hooks.example.org/x"},
        {
            "kind": "servicenow",
            "name": "snow",
            "instance_url": "https://u:p@x.example.org",
            "username": "u",
            "password": "p",
        },
        {"kind": "webhook", "name": "hook", "url": "file:///etc/passwd"},
        {"kind": "webhook", "name": "hook", "url": "https://example.org/x", "secret": "short-and-not-whsec"},
        {"kind": "smtp", "name": "mail", "username": "u", "recipients": ["a@b"]},
    ],
    ids=["userinfo-webhook", "userinfo-servicenow", "not-http", "webhook-secret-format", "login-without-password"],
)
def test_unsafe_connector_settings_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(ConnectorConfig).validate_python(config)


def test_smtp_defaults_to_starttls() -> None:
    assert SmtpConfig(name="mail", recipients=["it@example.org"]).tls == "starttls"


def test_a_relay_that_strips_starttls_never_sees_the_password(tmp_path: Path) -> None:
    """A man in the middle answers EHLO without STARTTLS: the connector stops before AUTH (and says so)."""
    relay = RecordingSmtp(free_port())  # no TLS: offers no STARTTLS
    relay.start()
    try:
        config: ConnectorConfig = TypeAdapter(ConnectorConfig).validate_python(
            {
                "kind": "smtp",
                "name": "mail",
                "port": relay.port,
                "username": "fleetpulse",
                "password": "relay-pw",
                "recipients": ["it@example.org"],
            }
        )
        with pytest.raises(PermanentDeliveryError, match="STARTTLS") as raised:
            build(config).deliver(sample_notification(tmp_path))
    finally:
        relay.stop()
    assert raised.value.whole_target
    assert relay.logins == []
    assert relay.messages == []


@pytest.mark.parametrize(("status", "permanent"), [(400, True), (401, True), (404, True), (429, False), (503, False)])
def test_permanent_http_answers_are_told_apart(
    status: int, permanent: bool, http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    http_server.status = status
    with pytest.raises(DeliveryError, match=f"HTTP {status}") as raised:
        build(connector_config("topdesk", http_server, smtp_server)).deliver(sample_notification(tmp_path))
    assert isinstance(raised.value, PermanentDeliveryError) is permanent


def _implicit_tls_relay(context: ssl.SSLContext, logins: list[str], subjects: list[str]) -> socketserver.TCPServer:
    """SMTPS (port 465 style): TLS from the first byte, then EHLO/AUTH PLAIN/MAIL/RCPT/DATA/QUIT."""

    class Handler(socketserver.StreamRequestHandler):
        def setup(self) -> None:
            self.request = context.wrap_socket(self.request, server_side=True)
            super().setup()

        def handle(self) -> None:
            def reply(line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            reply("220 smtps ready")
            while line := self.rfile.readline():
                command = line.decode().strip()
                verb = command[:4].upper()
                if verb == "EHLO":
                    reply("250-smtps")
                    reply("250 AUTH PLAIN")
                elif verb == "AUTH":
                    logins.append(base64.b64decode(command.split()[2]).decode())
                    reply("235 ok")
                elif verb in ("MAIL", "RCPT"):
                    reply("250 ok")
                elif verb == "DATA":
                    reply("354 go")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk
                    subjects.append(str(message_from_bytes(data)["Subject"]))
                    reply("250 queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    return
                else:
                    reply("502 no")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_email_over_implicit_tls_with_login(tmp_path: Path) -> None:
    cert, context = self_signed_tls(tmp_path)
    logins: list[str] = []
    subjects: list[str] = []
    relay = _implicit_tls_relay(context, logins, subjects)
    try:
        config: ConnectorConfig = TypeAdapter(ConnectorConfig).validate_python(
            {
                "kind": "smtp",
                "name": "mail",
                "port": relay.server_address[1],
                "tls": "implicit",
                "ssl_cafile": str(cert),
                "username": "fleetpulse",
                "password": "relay-pw",
                "recipients": ["it@example.org"],
            }
        )
        build(config).deliver(sample_notification(tmp_path))
    finally:
        relay.shutdown()
        relay.server_close()
    assert logins == ["\x00fleetpulse\x00relay-pw"]
    assert subjects[0].startswith("[fleetpulse]")


class _HostileAnswer:
    """An HTTP server answering every request with ``status`` and a body of ``chunks`` pieces of ``chunk``
    bytes, ``pause_s`` apart: a flood, or a trickle that beats every per-read timeout."""

    def __init__(self, status: int, chunk: int, chunks: int, pause_s: float = 0.0) -> None:
        self.sent = 0
        answer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(chunk * chunks))
                self.end_headers()
                piece = b" " * chunk
                try:
                    for _ in range(chunks):
                        self.wfile.write(piece)
                        answer.sent += chunk
                        time.sleep(pause_s)
                except OSError:  # the client stopped reading
                    pass

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _webhook(url: str, timeout_s: float = 10.0) -> Connector:
    config = {"kind": "webhook", "name": "hook", "url": url, "timeout_s": timeout_s}
    return build(TypeAdapter(ConnectorConfig).validate_python(config))


@pytest.mark.parametrize("status", [200, 500])
def test_an_endless_answer_is_cut_off_at_its_cap(status: int, tmp_path: Path) -> None:
    """A hostile receiver answers with 2 GiB: the connector stops reading at 1 MiB (4 KiB of an error
    page) and reports a delivery error instead of holding the body in memory."""
    flood = _HostileAnswer(status, chunk=1 << 20, chunks=2048)
    try:
        with pytest.raises(DeliveryError) as raised:
            _webhook(flood.url).deliver(sample_notification(tmp_path))
    finally:
        flood.close()
    assert ("larger than" in str(raised.value)) is (status == 200)
    assert len(str(raised.value)) <= MAX_ERROR_CHARS
    assert flood.sent < 64 << 20  # the server could not push its 2 GiB: the client hung up


def test_a_trickling_answer_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s never trips a 1 s read timeout; the whole answer still has 3x the timeout."""
    trickle = _HostileAnswer(200, chunk=1, chunks=10_000, pause_s=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match="AnswerTooSlow"):
            _webhook(trickle.url, timeout_s=1.0).deliver(sample_notification(tmp_path))
    finally:
        trickle.close()
    assert time.monotonic() - started < 10


def test_servicenow_answers_of_the_wrong_shape_end_in_no_reference_and_no_crash(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    snow = build(connector_config("servicenow", http_server, smtp_server))
    for answer in ({"result": None}, {"result": ["INC1"]}, {"result": {"number": {"$gt": ""}, "sys_id": "x" * 10_000}}):
        http_server.answer = answer
        receipt = snow.deliver(sample_notification(tmp_path))
        assert receipt is None or isinstance(receipt, Receipt)
        assert receipt is None or receipt.reference is None or len(receipt.reference) <= 128
        assert receipt is None or receipt.record_id is None


def test_a_hostile_incident_id_never_becomes_part_of_a_request_url(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """An ITSM (or whoever answers in its name) returns an id that would aim the update elsewhere."""
    note = sample_notification(tmp_path)
    update = note.model_copy(update={"subject": "update"})
    for kind, lookup in (
        ("servicenow", {"result": [{"sys_id": "../../sys_user/admin?sysparm_x=1", "number": "INC1"}]}),
        ("topdesk", [{"id": "../operators/id/1", "number": "I 1"}]),
    ):
        http_server.lookup_answer = lookup
        with pytest.raises(PermanentDeliveryError, match="unusable incident id"):
            build(connector_config(kind, http_server, smtp_server)).deliver(update)
    assert [r.method for r in http_server.requests] == ["GET", "GET"]  # no PATCH went out


def test_a_line_break_in_a_title_cannot_add_a_mail_header(
    http_server: RecordingHttp, smtp_server: RecordingSmtp, tmp_path: Path
) -> None:
    """A device names its disk ``sda\\r\\nBcc: ...``: the part id reaches the ticket's title, the mail's subject."""
    note = sample_notification(tmp_path)
    hostile = note.model_copy(update={"title": "[fleetpulse] high: disk sda\r\nBcc: attacker@example.org of pc-0001"})
    build(connector_config("smtp", http_server, smtp_server)).deliver(hostile)
    ((_sender, recipients, message),) = smtp_server.messages
    assert message["Bcc"] is None
    assert recipients == ["it@example.org", "fm@example.org"]
    assert message["Subject"] == "[fleetpulse] high: disk sda  Bcc: attacker@example.org of pc-0001"

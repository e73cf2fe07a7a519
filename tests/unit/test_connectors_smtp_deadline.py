"""Attack: a mail relay, or whoever answers in its name before STARTTLS, keeps the SMTP conversation going:
a greeting or EHLO reply trickled one continuation line (``220-…``) at a time, each well inside the read
timeout, or continuation lines without end. The ticket consumer delivers the outbox on its only thread, so
either would stop Kafka polling and ticket opening for good. Every case must end as a DeliveryError the
outbox retries: at the conversation's deadline, or at the reply cap.

The hostile relays are raw sockets on 127.0.0.1 played by this test.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpulse.alerts.connectors.base import DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.connectors.config import SmtpConfig
from fleetpulse.alerts.connectors.mail import CONVERSATION_DEADLINE_FACTOR, MAX_REPLY_BYTES, Smtp
from tests.harness import listener, self_signed_tls

TIMEOUT_S = 1.0
"""Each network wait of the connector; the whole conversation may take three times this."""
JOIN_S = 30.0
"""How long the test waits for deliver() to return: far past the deadline, so only a hang misses it."""
HOSTILE_FOR_S = JOIN_S + 5.0
"""The relays stop on their own after this, so a client that never hangs up is not fed forever."""
PASSWORD = "relay-pw"
Send = Callable[[bytes], None]
Attack = Callable[[Send, bytes], None]


def trickle(send: Send, code: bytes) -> None:
    """One short continuation line every half timeout: no read ever times out, the reply never ends."""
    end = time.monotonic() + HOSTILE_FOR_S
    while time.monotonic() < end:
        send(code + b"-still greeting\r\n")
        time.sleep(TIMEOUT_S / 2)


def flood(send: Send, code: bytes) -> None:
    """8 KB continuation lines (under smtplib's line limit) without end, paced so that a client keeping
    them all grows by under 1 MB a second."""
    end = time.monotonic() + HOSTILE_FOR_S
    while time.monotonic() < end:
        send(code + b"-" + b"x" * 8000 + b"\r\n")
        time.sleep(0.01)


def read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("the client hung up")
        line += byte
    return line


def relay(stage: str, attack: Attack, tls: ssl.SSLContext) -> Callable[[socket.socket], None]:
    """A relay that plays ``attack`` at ``stage``: its greeting (after the handshake of implicit TLS), its
    EHLO reply, or its EHLO reply after STARTTLS (the client then speaks TLS, as it does before a login)."""

    def talk(conn: socket.socket) -> None:
        conn.settimeout(HOSTILE_FOR_S)
        if stage == "greeting over implicit TLS":
            attack(tls.wrap_socket(conn, server_side=True).sendall, b"220")
            return
        if stage == "greeting":
            attack(conn.sendall, b"220")
            return
        conn.sendall(b"220 relay ready\r\n")
        assert read_line(conn).upper().startswith(b"EHLO")
        if stage == "EHLO reply":
            attack(conn.sendall, b"250")
            return
        conn.sendall(b"250-relay\r\n250 STARTTLS\r\n")
        assert read_line(conn).upper().startswith(b"STARTTLS")
        conn.sendall(b"220 go ahead\r\n")
        secure = tls.wrap_socket(conn, server_side=True)
        assert read_line(secure).upper().startswith(b"EHLO")
        attack(secure.sendall, b"250")

    return talk


def deliver_outcome(config: SmtpConfig) -> object:
    """What ``deliver`` returned or raised, waiting at most ``JOIN_S``; a delivery still running fails the test."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(Smtp(config).deliver(note()))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive(), "the relay still holds deliver() (and with it the consumer's thread)"
    (result,) = outcome
    return result


def note() -> Notification:
    return Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")


def mail(port: int, tls: str, cafile: Path) -> SmtpConfig:
    return SmtpConfig.model_validate(
        {
            "name": "mail",
            "host": "127.0.0.1",
            "port": port,
            "tls": tls,
            "ssl_cafile": cafile,
            "username": "fleetpulse",
            "password": PASSWORD,
            "recipients": ["it@example.org"],
            "timeout_s": TIMEOUT_S,
        }
    )


@pytest.mark.parametrize(
    ("stage", "tls"),
    [
        ("greeting", "starttls"),
        ("greeting over implicit TLS", "implicit"),
        ("EHLO reply", "starttls"),
        ("EHLO reply after STARTTLS", "starttls"),
    ],
)
def test_attack_a_trickled_reply_ends_at_the_conversation_deadline(stage: str, tls: str, tmp_path: Path) -> None:
    cert, context = self_signed_tls(tmp_path)
    with listener(relay(stage, trickle, context)) as port:
        result = deliver_outcome(mail(port, tls, cert))
    assert isinstance(result, DeliveryError)
    assert not isinstance(result, PermanentDeliveryError)  # retried later, like an unreachable relay
    deadline_s = CONVERSATION_DEADLINE_FACTOR * TIMEOUT_S
    assert str(result) == f"the relay did not finish the SMTP conversation within {deadline_s:g} s"


@pytest.mark.parametrize(
    ("stage", "tls"),
    [("greeting", "starttls"), ("EHLO reply", "starttls"), ("EHLO reply after STARTTLS", "starttls")],
)
def test_attack_an_endless_multiline_reply_is_cut_off_at_the_reply_cap(stage: str, tls: str, tmp_path: Path) -> None:
    cert, context = self_signed_tls(tmp_path)
    with listener(relay(stage, flood, context)) as port:
        result = deliver_outcome(mail(port, tls, cert))
    assert isinstance(result, DeliveryError)
    assert not isinstance(result, PermanentDeliveryError)
    assert f"the relay's reply is longer than {MAX_REPLY_BYTES} bytes" in str(result)
    assert PASSWORD not in str(result)

"""A relay that accepted the message (250 after DATA) and then answers QUIT oddly: an error, garbage, a
silence or a dropped connection. The mail is delivered at the 250; counting the send as failed would have
the outbox retry it and the service desk receive the same mail twice.

The relays are raw sockets on 127.0.0.1 played by this test.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from email import message_from_bytes
from email.policy import SMTP

import pytest

from fleetpulse.alerts.connectors.base import Notification
from fleetpulse.alerts.connectors.config import SmtpConfig
from fleetpulse.alerts.connectors.mail import Smtp
from tests.harness import listener

TIMEOUT_S = 1.0
QuitAnswer = Callable[[socket.socket], None]


def read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("the client hung up")
        line += byte
    return line


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"\x00\xffnot an smtp reply\r\n")


def error(conn: socket.socket) -> None:
    conn.sendall(b"554 5.0.0 transaction failed after all\r\n")


def busy(conn: socket.socket) -> None:
    conn.sendall(b"421 4.3.2 shutting down\r\n")


def close(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_RDWR)


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST


def silence(conn: socket.socket) -> None:
    time.sleep(2 * TIMEOUT_S)


def relay(quit_answer: QuitAnswer, messages: list[bytes]) -> Callable[[socket.socket], None]:
    """Plain SMTP up to a 250 for DATA, which keeps the message; then ``quit_answer`` to QUIT."""

    def talk(conn: socket.socket) -> None:
        conn.sendall(b"220 relay ready\r\n")
        while line := read_line(conn):
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-relay\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                conn.sendall(b"250 OK\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 end with .\r\n")
                data = b""
                while (chunk := read_line(conn)) != b".\r\n":
                    data += chunk
                messages.append(data)
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                quit_answer(conn)
                return
            else:
                conn.sendall(b"502 not implemented\r\n")

    return talk


def note() -> Notification:
    return Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")


@pytest.mark.parametrize("quit_answer", [garbage, error, busy, close, reset, silence])
def test_a_message_the_relay_accepted_is_delivered_whatever_quit_gets(
    quit_answer: QuitAnswer, caplog: pytest.LogCaptureFixture
) -> None:
    messages: list[bytes] = []
    with listener(relay(quit_answer, messages)) as port:
        config = SmtpConfig(
            name="mail", host="127.0.0.1", port=port, tls="none", recipients=["it@example.org"], timeout_s=TIMEOUT_S
        )
        with caplog.at_level("WARNING", logger="fleetpulse.alerts.connectors.mail"):
            message_id = Smtp(config).deliver(note())
    assert message_id is not None
    assert len(messages) == 1
    assert message_from_bytes(messages[0], policy=SMTP)["Message-ID"].strip() == message_id
    (warning,) = [r for r in caplog.records if "not QUIT" in r.getMessage()]
    assert warning.__dict__["fields"]["message_id"] == message_id


def test_a_relay_that_says_goodbye_leaves_nothing_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    messages: list[bytes] = []
    with listener(relay(lambda conn: conn.sendall(b"221 bye\r\n"), messages)) as port:
        config = SmtpConfig(name="mail", host="127.0.0.1", port=port, tls="none", recipients=["it@example.org"])
        with caplog.at_level("WARNING", logger="fleetpulse.alerts.connectors.mail"):
            assert Smtp(config).deliver(note())
    assert len(messages) == 1
    assert not caplog.records

"""Attack: a hostile ITSM, webhook receiver or identity provider keeps the exchange alive past its overall
deadline by trickling bytes just inside every per-read timeout, before the body: in its TLS handshake, in its
response headers, or on a kept-alive connection. The consumer delivers the outbox inline and the API's login
waits on the provider, so each would stall. Every case must end at the deadline (plus scheduling slack).

The hostile peers are raw sockets on 127.0.0.1 played by this test; nothing else is needed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from pydantic import TypeAdapter

from fleetpulse.alerts import bounded_http
from fleetpulse.alerts.connectors import ConnectorConfig, DeliveryError, build
from fleetpulse.alerts.connectors.base import Notification
from fleetpulse.alerts.oidc import OidcProvider, OidcSettings, OidcUnavailable
from fleetpulse.compat import UTC

TIMEOUT_S = 1.0
"""Each network wait; the promised deadline of a connector's whole answer is three times this."""
SLACK_S = 1.5
"""Thread scheduling on a loaded CI machine, and the connector's own work around the exchange."""
Conversation = Callable[[socket.socket], None]


class HostilePeer:
    """A TCP server running ``conversation`` on every connection it accepts, until the client hangs up."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed by the test
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client cut the connection: the point of the test
            self.conversation(conn)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def peers() -> Iterator[Callable[[Conversation], HostilePeer]]:
    opened: list[HostilePeer] = []

    def start(conversation: Conversation) -> HostilePeer:
        opened.append(HostilePeer(conversation))
        return opened[-1]

    yield start
    for peer in opened:
        peer.close()


def read_request(conn: socket.socket) -> bytes:
    """One request's head and body (by Content-Length); b"" when the client closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


def trickle(conn: socket.socket, opening: bytes, for_s: float = 30.0) -> None:
    """Send ``opening``, then one byte every half timeout: no single read ever waits long enough to time out."""
    conn.sendall(opening)
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        conn.sendall(b"a")
        time.sleep(TIMEOUT_S / 2)


def trickled_headers(conn: socket.socket) -> None:
    if read_request(conn):
        trickle(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ")


def trickled_tls_handshake(conn: socket.socket) -> None:
    """A TLS record header announcing 16 KiB of handshake, whose bytes then come one at a time."""
    trickle(conn, bytes([0x16, 0x03, 0x03, 0x40, 0x00]))


def webhook(url: str) -> ConnectorConfig:
    config: ConnectorConfig = TypeAdapter(ConnectorConfig).validate_python(
        {"kind": "webhook", "name": "hook", "url": url, "timeout_s": TIMEOUT_S}
    )
    return config


def notification() -> Notification:
    return Notification(subject="storm", dedup_key="fleetpulse-storm-1", title="t", body="b", urgency="high")


def deliver_timed(config: ConnectorConfig) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as raised:
        build(config).deliver(notification())
    return time.monotonic() - started, str(raised.value)


def test_attack_trickled_response_headers_end_at_the_deadline(
    peers: Callable[[Conversation], HostilePeer],
) -> None:
    peer = peers(trickled_headers)
    elapsed, error = deliver_timed(webhook(peer.url))
    assert "AnswerTooSlow" in error
    assert elapsed < 3 * TIMEOUT_S + SLACK_S


def test_attack_a_trickled_tls_handshake_ends_at_the_deadline(
    peers: Callable[[Conversation], HostilePeer],
) -> None:
    """(Python bounds a whole handshake by the socket timeout, so this one may end before the watchdog fires.)"""
    peer = peers(trickled_tls_handshake)
    elapsed, error = deliver_timed(webhook(peer.url.replace("http://", "https://")))
    assert "Timeout" in error or "AnswerTooSlow" in error
    assert elapsed < 3 * TIMEOUT_S + SLACK_S


def test_attack_an_identity_provider_trickling_on_a_kept_alive_connection(
    peers: Callable[[Conversation], HostilePeer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery is answered at once on a keep-alive connection; the token endpoint's answer trickles on
    whatever connection carries it. The login ends as 'provider unavailable' at the provider deadline."""
    deadline_s = 2.0
    monkeypatch.setattr("fleetpulse.alerts.oidc.ANSWER_DEADLINE_S", deadline_s)
    issuer: list[str] = []

    def provider(conn: socket.socket) -> None:
        while head := read_request(conn):
            if b"/.well-known/openid-configuration" not in head.split(b"\r\n")[0]:
                trickle(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ")
                return
            document = json.dumps(
                {
                    "issuer": issuer[0],
                    "authorization_endpoint": f"{issuer[0]}/auth",
                    "token_endpoint": f"{issuer[0]}/token",
                    "jwks_uri": f"{issuer[0]}/certs",
                }
            ).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                + f"Content-Length: {len(document)}\r\n\r\n".encode()
                + document
            )

    peer = peers(provider)
    issuer.append(peer.url)
    settings = OidcSettings(
        issuer=peer.url,
        client_id="fleetpulse-page",
        redirect_url="http://127.0.0.1/auth/callback",
        allow_insecure_http=True,
    )
    relying_party = OidcProvider(settings, clock=lambda: datetime.now(UTC).timestamp())
    started = time.monotonic()
    with pytest.raises(OidcUnavailable, match="AnswerTooSlow"):
        relying_party.exchange("code", "verifier")
    assert time.monotonic() - started < deadline_s + SLACK_S
    assert peer.connections == 2  # the token request had a connection of its own


def test_an_answer_within_the_deadline_is_read_whole(peers: Callable[[Conversation], HostilePeer]) -> None:
    """The watchdog cuts nothing that finishes in time, and the request says the connection is not reused."""
    heads: list[bytes] = []

    def prompt(conn: socket.socket) -> None:
        heads.append(read_request(conn))
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')

    peer = peers(prompt)
    answer = bounded_http.request("GET", peer.url, deadline_s=3 * TIMEOUT_S, timeout=TIMEOUT_S)
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert b"connection: close" in heads[0].lower()

"""E-mail connector: one plain-text message per ticket or storm and its updates as replies to it,
over SMTP with STARTTLS or implicit TLS.

A login is only ever sent over TLS (configuration refuses anything else unless ``allow_insecure``).
The relay, or whoever sits on the path before STARTTLS, cannot hold the consumer's only thread or
fill its memory: the whole conversation has a deadline and each reply a size cap.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import BinaryIO

from fleetpulse.alerts.bounded_http import Watchdog
from fleetpulse.alerts.connectors.base import DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.connectors.config import SmtpConfig
from fleetpulse.redact import scrub

log = logging.getLogger(__name__)
_HEADER_BREAKING = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,160}@[!-;=?-~]{1,80}>")
"""A stored reference usable as In-Reply-To: one ``<id@domain>`` of printable ASCII, nothing else."""
_ID_TEXT = re.compile(r"[^A-Za-z0-9.-]")
CONVERSATION_DEADLINE_FACTOR = 3
"""The whole SMTP conversation may take this many times the connector's timeout (which bounds each network wait)."""
MAX_REPLY_BYTES = 64 * 1024
"""The most one relay reply may take (an EHLO answer is under 1 KB): smtplib reads continuation lines without end."""
_EVERY_MESSAGE_FAILS = (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError)
"""A wrong login, a relay without STARTTLS, an untrusted certificate: no retry helps any message to the relay."""


def header_text(value: str) -> str:
    """``value`` as one header line: a line break in a title (a disk name a device reported) must not add a header."""
    return _HEADER_BREAKING.sub(" ", value)


def _follow_up(message: EmailMessage, notification: Notification) -> None:
    """An update as a reply to the ticket's first mail: its subject behind ``Re:``, threaded under its
    Message-ID (the reference the outbox stored when that mail was sent). A retry carries the same
    Message-ID, derived from the update and the first mail, so a receiver that drops duplicates can."""
    first = notification.first_reference if _MESSAGE_ID.fullmatch(notification.first_reference or "") else None
    message["Subject"] = header_text(f"Re: {notification.first_title or notification.title}")
    if first is not None and notification.update_id:
        digest = hashlib.sha256(f"{first}\n{notification.update_id}".encode()).hexdigest()[:24]
        message["Message-ID"] = f"<{digest}.{_ID_TEXT.sub('-', notification.update_id)[:64]}@fleetpulse>"
    else:
        message["Message-ID"] = make_msgid(idstring=header_text(notification.dedup_key), domain="fleetpulse")
    if first is not None:
        message["In-Reply-To"] = first
        message["References"] = first
    message.set_content(f"{notification.title}\n\n{notification.body}")


class _ReplyReader:
    """What smtplib reads the relay's replies from: each reply ends after ``MAX_REPLY_BYTES``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.left = MAX_REPLY_BYTES

    def readline(self, size: int = -1) -> bytes:
        line = self.raw.readline(size)
        self.left -= len(line)
        if self.left < 0:  # smtplib closes the connection and raises SMTPServerDisconnected with this text
            raise OSError(f"the relay's reply is longer than {MAX_REPLY_BYTES} bytes")
        return line

    def close(self) -> None:
        self.raw.close()


class _BoundedSmtp(smtplib.SMTP):
    """smtplib's client with capped replies, whose TCP socket ``watchdog`` shuts down at the deadline.

    The socket is handed to the watchdog before any byte is read (greeting, implicit TLS handshake),
    and STARTTLS rides on it, so every wait of the conversation ends at the deadline.
    """

    def __init__(
        self, host: str, port: int, timeout: float, watchdog: Watchdog, implicit_tls: ssl.SSLContext | None
    ) -> None:
        self._watchdog = watchdog
        self._implicit_tls = implicit_tls
        super().__init__(host, port, timeout=timeout)  # connects and reads the greeting

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        self._watchdog.watch(sock)
        if self._implicit_tls is None:
            return sock
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            self.file = _ReplyReader(self.sock.makefile("rb"))
        if self.file is not None:
            self.file.left = MAX_REPLY_BYTES
        return super().getreply()


class Smtp:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.name = config.name

    def _connect(self, watchdog: Watchdog) -> smtplib.SMTP:
        cafile = str(self.config.ssl_cafile) if self.config.ssl_cafile else None
        implicit = ssl.create_default_context(cafile=cafile) if self.config.tls == "implicit" else None
        smtp = _BoundedSmtp(self.config.host, self.config.port, self.config.timeout_s, watchdog, implicit)
        if self.config.tls == "starttls":
            try:
                smtp.starttls(context=ssl.create_default_context(cafile=cafile))
            except BaseException:
                smtp.close()
                raise
        return smtp

    def deliver(self, notification: Notification) -> str | None:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = ", ".join(self.config.recipients)
        message["X-Fleetpulse-Delivery"] = header_text(notification.dedup_key)
        if notification.subject == "update":
            _follow_up(message, notification)
        else:
            message["Subject"] = header_text(notification.title)
            message["Message-ID"] = make_msgid(idstring=header_text(notification.dedup_key), domain="fleetpulse")
            message.set_content(notification.body)
        deadline_s = CONVERSATION_DEADLINE_FACTOR * self.config.timeout_s
        watchdog = Watchdog(deadline_s)
        with watchdog:
            try:
                smtp = self._connect(watchdog)
                try:
                    if self.config.username and self.config.password:
                        smtp.login(self.config.username, self.config.password.get_secret_value())
                    smtp.send_message(message)
                except BaseException:
                    smtp.close()
                    raise
            except OSError as exc:  # smtplib's errors, TLS and socket errors alike
                if watchdog.expired:  # whatever the cut connection raised
                    raise DeliveryError(
                        f"the relay did not finish the SMTP conversation within {deadline_s:g} s"
                    ) from None
                raise self._failure(exc) from None
            self._quit(smtp, str(message["Message-ID"]))
        return str(message["Message-ID"])

    def _quit(self, smtp: smtplib.SMTP, message_id: str) -> None:
        """Say goodbye after the relay accepted the message (250 to DATA): the mail is delivered by then,
        so whatever QUIT gets (an error, garbage, a dropped connection, the deadline) is logged and ignored;
        failing the delivery here would have the outbox send the same mail again.
        """
        try:
            code, reply = smtp.quit()
        except OSError as exc:
            code, reply = None, scrub(f"{type(exc).__name__}: {exc}", self.config.secrets()).encode()
        finally:
            smtp.close()
        if code != 221:
            log.warning(
                "SMTP relay accepted the message but not QUIT; the message counts as delivered",
                extra={
                    "fields": {
                        "connector": self.name,
                        "message_id": message_id,
                        "quit_code": code,
                        "quit_reply": scrub(reply.decode("utf-8", "replace"), self.config.secrets())[:200],
                    }
                },
            )

    def _failure(self, exc: OSError) -> DeliveryError:
        text = scrub(f"{type(exc).__name__}: {exc}", self.config.secrets())
        if isinstance(exc, _EVERY_MESSAGE_FAILS):
            return PermanentDeliveryError(text, whole_target=True)
        if isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600:  # 5yz: permanent by RFC 5321
            return PermanentDeliveryError(text, whole_target=False)
        return DeliveryError(text)

"""E-mail connector: one plain-text message per ticket or storm, over SMTP with STARTTLS or implicit TLS.

A login is only ever sent over TLS (configuration refuses anything else unless ``allow_insecure``).
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from fleetpulse.alerts.connectors.base import DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.connectors.config import SmtpConfig
from fleetpulse.redact import scrub

_HEADER_BREAKING = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def header_text(value: str) -> str:
    """``value`` as one header line: a line break in a title (a disk name a device reported) must not add a header."""
    return _HEADER_BREAKING.sub(" ", value)


class Smtp:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.name = config.name

    def _connect(self) -> smtplib.SMTP:
        cafile = str(self.config.ssl_cafile) if self.config.ssl_cafile else None
        if self.config.tls == "implicit":
            context = ssl.create_default_context(cafile=cafile)
            return smtplib.SMTP_SSL(self.config.host, self.config.port, timeout=self.config.timeout_s, context=context)
        smtp = smtplib.SMTP(self.config.host, self.config.port, timeout=self.config.timeout_s)
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
        message["Subject"] = header_text(notification.title)
        message["Message-ID"] = make_msgid(idstring=header_text(notification.dedup_key), domain="fleetpulse")
        message["X-Fleetpulse-Delivery"] = header_text(notification.dedup_key)
        message.set_content(notification.body)
        secrets = self.config.secrets()
        try:
            with self._connect() as smtp:
                if self.config.username and self.config.password:
                    smtp.login(self.config.username, self.config.password.get_secret_value())
                smtp.send_message(message)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            # wrong login, a relay without STARTTLS, an untrusted certificate: every message would fail alike
            raise PermanentDeliveryError(scrub(f"{type(exc).__name__}: {exc}", secrets), whole_target=True) from None
        except smtplib.SMTPResponseException as exc:
            text = scrub(f"{type(exc).__name__}: {exc}", secrets)
            if 500 <= exc.smtp_code < 600:  # SMTP 5yz: permanent by RFC 5321
                raise PermanentDeliveryError(text, whole_target=False) from None
            raise DeliveryError(text) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(scrub(f"{type(exc).__name__}: {exc}", secrets)) from None
        return str(message["Message-ID"])

"""E-mail connector: one plain-text message per ticket or storm, over SMTP (optionally STARTTLS + login)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from fleetpulse.alerts.connectors.base import DeliveryError, Notification
from fleetpulse.alerts.connectors.config import SmtpConfig


class Smtp:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> str | None:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = ", ".join(self.config.recipients)
        message["Subject"] = notification.title
        message["Message-ID"] = make_msgid(idstring=notification.dedup_key, domain="fleetpulse")
        message["X-Fleetpulse-Delivery"] = notification.dedup_key
        message.set_content(notification.body)
        try:
            with smtplib.SMTP(self.config.host, self.config.port, timeout=self.config.timeout_s) as smtp:
                if self.config.starttls:
                    cafile = str(self.config.ssl_cafile) if self.config.ssl_cafile else None
                    smtp.starttls(context=ssl.create_default_context(cafile=cafile))
                if self.config.username and self.config.password:  # only after STARTTLS when configured
                    smtp.login(self.config.username, self.config.password.get_secret_value())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        return str(message["Message-ID"])

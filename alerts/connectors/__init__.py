"""ITSM connectors behind one interface: generic webhook, ServiceNow, TOPdesk, e-mail.

``build(config)`` turns a connector's settings into a :class:`~.base.Connector`; the
outbox (:mod:`fleetpulse.alerts.outbox`) calls ``deliver`` and retries on DeliveryError.
"""

from __future__ import annotations

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification
from fleetpulse.alerts.connectors.config import (
    ConnectorConfig,
    ServiceNowConfig,
    SmtpConfig,
    TopdeskConfig,
    WebhookConfig,
)


def build(config: ConnectorConfig) -> Connector:
    from fleetpulse.alerts.connectors import http, mail

    if isinstance(config, WebhookConfig):
        return http.Webhook(config)
    if isinstance(config, ServiceNowConfig):
        return http.ServiceNow(config)
    if isinstance(config, TopdeskConfig):
        return http.Topdesk(config)
    if isinstance(config, SmtpConfig):
        return mail.Smtp(config)
    raise TypeError(f"unknown connector config {type(config).__name__}")


__all__ = ["Connector", "ConnectorConfig", "DeliveryError", "Notification", "build"]

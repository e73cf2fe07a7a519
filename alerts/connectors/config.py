"""Configuration of the ITSM connectors: one model per kind, told apart by ``kind``.

Kept free of I/O imports so settings can be loaded without the HTTP/SMTP machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Timeout = Annotated[float, Field(gt=0.0, le=120.0)]


class _Connector(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = Field(description="unique per connector; outbox rows are addressed by it")
    timeout_s: Timeout = 10.0


class WebhookConfig(_Connector):
    """POSTs the ticket JSON; signs the body with HMAC-SHA256 when a secret is set."""

    kind: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = Field(default=None, description="X-Fleetpulse-Signature: sha256=<hex hmac of body>")


class ServiceNowConfig(_Connector):
    """ServiceNow Table API: POST /api/now/table/<table> with basic auth."""

    kind: Literal["servicenow"] = "servicenow"
    instance_url: str = Field(description="e.g. https://example.service-now.com")
    username: str
    password: SecretStr
    table: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")] = "incident"
    assignment_group: str | None = None


class TopdeskConfig(_Connector):
    """TOPdesk incidents API: POST /tas/api/incidents with an operator login and application password."""

    kind: Literal["topdesk"] = "topdesk"
    url: str = Field(description="e.g. https://example.topdesk.net")
    username: str
    app_password: SecretStr
    caller_name: str = "fleetpulse"
    category: str | None = None


class SmtpConfig(_Connector):
    kind: Literal["smtp"] = "smtp"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    starttls: bool = False
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for a relay with a private CA")
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "fleetpulse@localhost"
    recipients: Annotated[list[str], Field(min_length=1, max_length=50)]


ConnectorConfig = Annotated[
    WebhookConfig | ServiceNowConfig | TopdeskConfig | SmtpConfig,
    Field(discriminator="kind"),
]

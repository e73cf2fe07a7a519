"""Configuration of the ITSM connectors: one model per kind, told apart by ``kind``.

Kept free of I/O imports so settings can be loaded without the HTTP/SMTP machinery.
Credentials never travel without TLS: an ``http://`` URL with credentials or an SMTP
login without TLS is refused at load time unless the connector sets ``allow_insecure``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Timeout = Annotated[float, Field(gt=0.0, le=120.0)]

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a format marker, not a secret)
_WEBHOOK_KEY_BYTES = (24, 64)  # the Standard Webhooks range


class _Connector(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = Field(description="unique per connector; outbox rows are addressed by it")
    timeout_s: Timeout = 10.0
    allow_insecure: bool = Field(
        default=False, description="send credentials without TLS (http://, plain SMTP): a lab, never production"
    )

    def secrets(self) -> list[str]:
        """The configured secret values, so error texts can be scrubbed of them."""
        return [
            value.get_secret_value()
            for value in self.__dict__.values()
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]


def _check_url(url: str, field: str, sends_credentials: bool, allow_insecure: bool) -> None:
    """An http(s) URL without embedded credentials; plain http only without credentials or when allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{field} must not carry credentials; use the connector's credential fields")
    if parts.scheme == "http" and sends_credentials and not allow_insecure:
        raise ValueError(
            f"{field} is http://: the credentials would be sent in clear; use https:// "
            "(or set allow_insecure = true on this connector for a test system)"
        )


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after ``whsec_``."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {WEBHOOK_SECRET_PREFIX!r} followed by base64") from None
    low, high = _WEBHOOK_KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"must encode {low} to {high} random bytes")
    return key


class WebhookConfig(_Connector):
    """POSTs the notification JSON, signed per Standard Webhooks when a secret is set."""

    kind: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = Field(
        default=None,
        description="whsec_<base64 of 24-64 random bytes>; signs webhook-id.webhook-timestamp.body (HMAC-SHA256)",
    )

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            try:
                webhook_key(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(
                    f'webhook secret {exc} (generate one: python3 -c "import base64, secrets; '
                    "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\")"
                ) from None
        return secret

    @model_validator(mode="after")
    def _safe_url(self) -> WebhookConfig:
        _check_url(self.url, "url", sends_credentials=False, allow_insecure=self.allow_insecure)
        return self


class ServiceNowConfig(_Connector):
    """ServiceNow Table API: POST /api/now/table/<table> with basic auth over HTTPS."""

    kind: Literal["servicenow"] = "servicenow"
    instance_url: str = Field(description="e.g. https://example.service-now.com")
    username: str
    password: SecretStr
    table: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")] = "incident"
    assignment_group: str | None = None

    @model_validator(mode="after")
    def _safe_url(self) -> ServiceNowConfig:
        _check_url(self.instance_url, "instance_url", sends_credentials=True, allow_insecure=self.allow_insecure)
        return self


class TopdeskConfig(_Connector):
    """TOPdesk incidents API: POST /tas/api/incidents with an operator login and application password."""

    kind: Literal["topdesk"] = "topdesk"
    url: str = Field(description="e.g. https://example.topdesk.net")
    username: str
    app_password: SecretStr
    caller_name: str = "fleetpulse"
    category: str | None = None

    @model_validator(mode="after")
    def _safe_url(self) -> TopdeskConfig:
        _check_url(self.url, "url", sends_credentials=True, allow_insecure=self.allow_insecure)
        return self


class SmtpConfig(_Connector):
    """An SMTP relay: STARTTLS by default, ``implicit`` for SMTPS (port 465), ``none`` only without a login."""

    kind: Literal["smtp"] = "smtp"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for a relay with a private CA")
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "fleetpulse@localhost"
    recipients: Annotated[list[str], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _login_over_tls(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password for an SMTP login, or neither")
        if self.tls == "none" and self.password is not None and not self.allow_insecure:
            raise ValueError(
                "tls = 'none' would send the SMTP password in clear; use 'starttls' or 'implicit' "
                "(or set allow_insecure = true on this connector for a test relay)"
            )
        return self


ConnectorConfig = Annotated[
    WebhookConfig | ServiceNowConfig | TopdeskConfig | SmtpConfig,
    Field(discriminator="kind"),
]

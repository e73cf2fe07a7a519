"""Settings of the alert policy, ticket store, API and ITSM connectors."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from fleetpulse.alerts.connectors.config import ConnectorConfig
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.alerts.storm import StormPolicy
from fleetpulse.models.forecast_settings import ForecastSettings

Role = Literal["fleet_manager", "it_support", "admin"]
ALL_SITES = "*"
SiteName = Annotated[str, Field(min_length=1, max_length=128)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiUser(_Frozen):
    """A local login (login form, or HTTP basic for API clients); the secret is stored only as a hash."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    role: Role
    password_hash: str = Field(
        description="$argon2id$... from `fleetpulse tickets hash-secret` (older pbkdf2_sha256$... hashes still verify)"
    )
    sites: Annotated[list[SiteName], Field(min_length=1)] = Field(
        default=[ALL_SITES], description='sites this login sees and changes; "*" = every site'
    )
    departments: list[SiteName] = Field(default=[], description="narrows the sites to these departments; [] = all")


class ApiToken(_Frozen):
    """A bearer token for machines (e.g. ITSM pulling the export); stored as its SHA-256 (tokens are random)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    role: Role
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    sites: Annotated[list[SiteName], Field(min_length=1)] = Field(
        description='sites the token sees and changes; "*" = every site (required: a token states its scope)'
    )
    departments: list[SiteName] = Field(default=[], description="narrows the sites to these departments; [] = all")


class OidcSettings(_Frozen):
    """Single sign-on through an OpenID Connect provider (Keycloak, Entra ID, ADFS)."""

    issuer: str = Field(description="the provider's issuer URL, exactly as in its ID tokens")
    client_id: str
    client_secret: SecretStr | None = Field(default=None, description="confidential client; None for a public client")
    redirect_url: str = Field(description="this page's callback as the browser reaches it: https://…/auth/callback")
    post_logout_redirect_url: str | None = Field(
        default=None, description="where the provider sends the browser after logout (…/auth/logged-out)"
    )
    scopes: list[str] = ["openid", "profile", "email"]
    role_claim: str = Field(default="groups", description="claim holding group or role names")
    roles: dict[str, Role] = Field(default_factory=dict, description="claim value -> fleetpulse role")
    site_claim: str = Field(default="groups", description="claim holding the person's sites")
    sites: dict[str, str] = Field(
        default_factory=dict, description='claim value -> site name as in the inventory; "*" = every site'
    )
    department_claim: str | None = Field(
        default=None,
        description="claim narrowing the scope to departments: a person without a department value sees every "
        "department of their sites (unless require_department); one whose department values are all unmapped gets "
        "no access",
    )
    require_department: bool = Field(
        default=False,
        description="a person whose token carries no department value in department_claim gets no access instead "
        "of every department of their sites (needs department_claim)",
    )
    departments: dict[str, str] = Field(default_factory=dict, description="claim value -> department")
    department_prefix: str | None = Field(
        default=None,
        description="where department_claim also holds other groups (as Keycloak's groups claim does), the prefix "
        "of the department groups (e.g. dept-); unset, every value that is no mapped role or site group is one",
    )
    name_claims: list[str] = Field(
        default=["preferred_username", "email"],
        description=(
            "claims naming the person on ticket histories, first present wins (else the subject); add "
            '"name" only where people cannot edit it, or anyone could act under a colleague\'s name'
        ),
    )
    clock_skew_s: Annotated[int, Field(ge=0, le=300)] = 60
    metadata_cache_s: Annotated[int, Field(ge=60)] = 3600
    max_pending_exchanges: Annotated[int, Field(ge=1, le=32)] = Field(
        default=8,
        description="logins waiting at once for the provider's token endpoint, each on one of the API's 40 request "
        "threads; one more is refused with 503 at once, so a slow or unreachable provider cannot hold the threads "
        "that tokens and sessions need",
    )
    max_pending_logins: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=10_000,
        description="logins started and not yet back from the provider, kept in the ticket store until "
        "session.login_timeout; a login started beyond this gets a 503 page (try again in a minute), so logins "
        "started from many addresses cannot fill the database",
    )
    max_pending_logins_per_address: Annotated[int, Field(ge=1, le=100)] = Field(
        default=10,
        description="logins one address (an IPv6 address: its /64) may have waiting for the provider; starting "
        "one more drops that address's oldest, so a person who clicks log in again and again still gets in and "
        "one address cannot fill the database",
    )
    allow_insecure_http: bool = Field(
        default=False, description="accept an http:// issuer (a local test provider only): tokens would travel in clear"
    )

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> OidcSettings:
        for name in ("issuer", "redirect_url"):
            scheme = urlsplit(getattr(self, name)).scheme
            if scheme not in ("https", "http"):
                raise ValueError(f"{name} must be an http(s) URL")
            if scheme == "http" and not self.allow_insecure_http:
                raise ValueError(f"{name} must use https (set allow_insecure_http only for a local test provider)")
        if "openid" not in self.scopes:
            raise ValueError('scopes must include "openid"')
        if self.require_department and self.department_claim is None:
            raise ValueError(
                "require_department needs department_claim: without a claim to read no token carries a "
                "department, so nobody could log in"
            )
        return self


class SessionSettings(_Frozen):
    """Page sessions: kept in the ticket store, named by a signed cookie."""

    secret_key: SecretStr | None = Field(
        default=None,
        description="signs the session cookie and keys the stored login-throttle counts (32+ random bytes, the same "
        "on every replica); unset: a random key per process, so sessions and failed-login counts end at a restart "
        "and each replica counts alone",
    )
    cookie_secure: bool = Field(
        default=True, description="send the cookie over HTTPS only; turn off only for a local http:// install"
    )
    idle_timeout: Annotated[timedelta, Field(gt=timedelta(0))] = Field(
        default=timedelta(minutes=30), description="a session unused this long ends"
    )
    absolute_timeout: Annotated[timedelta, Field(gt=timedelta(0))] = Field(
        default=timedelta(hours=10), description="a session ends this long after its login, however busy"
    )
    login_timeout: Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(hours=1))] = Field(
        default=timedelta(minutes=10), description="a started login must come back from the provider within this"
    )

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> SessionSettings:
        if self.idle_timeout > self.absolute_timeout:
            raise ValueError("session.idle_timeout must not exceed session.absolute_timeout")
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("session.secret_key needs at least 32 characters")
        return self


class ApiLimits(_Frozen):
    """What one client may cost the API: request body size, CSV exports and the login throttle.

    Login failures are counted in the ticket store (shared by all replicas). A login name
    failing from one address is slowed down by a doubling delay after ``free_failures_per_login``
    (the owner elsewhere is unaffected); an address failing for many names (password spraying)
    is slowed down after ``free_failures_per_address``. Counts are forgotten after ``forget_after``
    without failures.
    """

    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024,
        description="largest request body read (413 above); the largest valid bulk transition is about 10 KB",
    )
    max_export_rows: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=100_000,
        description="most tickets one CSV export may hold (422 above, asking for a narrower filter); the file "
        "(about 300 bytes a ticket) is spooled to the temporary directory while it is sent",
    )
    max_concurrent_exports: Annotated[int, Field(ge=1, le=32)] = Field(
        default=2,
        description="CSV exports written or sent at once per API process (503 with Retry-After above): the "
        "temporary directory holds at most this many export files",
    )
    max_concurrent_exports_per_user: Annotated[int, Field(ge=1, le=32)] = Field(
        default=1,
        description="CSV exports one caller (a login, token or single sign-on subject) may have written or sent at "
        "once (429 with Retry-After above), so one slow downloader cannot hold every export place; at most "
        "max_concurrent_exports",
    )
    export_send_timeout: Annotated[timedelta, Field(ge=timedelta(seconds=1), le=timedelta(hours=24))] = Field(
        default=timedelta(minutes=15),
        description="a CSV export not sent within this long is cut short of its Content-Length and its place given "
        "back: a client that stops reading would otherwise hold a place for as long as it keeps the connection "
        "open. The largest export (max_export_rows, about 30 MB) takes about 4 minutes at 1 Mbit/s",
    )
    free_failures_per_login: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5, description="failed logins of one name from one address before its backoff starts"
    )
    free_failures_per_address: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20, description="failed logins of any names from one address before the address's backoff starts"
    )
    backoff_base: Annotated[timedelta, Field(gt=timedelta(0))] = Field(
        default=timedelta(seconds=1),
        description="block after the first failure past the free ones; doubles per failure",
    )
    backoff_max: Annotated[timedelta, Field(gt=timedelta(0))] = Field(
        default=timedelta(minutes=15),
        description="longest block; the owner at the attacker's address waits at most this",
    )
    forget_after: Annotated[timedelta, Field(gt=timedelta(0))] = Field(
        default=timedelta(hours=1), description="a key's failure count restarts after this long without failures"
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default=[],
        description="reverse proxies (e.g. the ingress controller's pod network) whose X-Forwarded-For names the "
        "client address; without them every client behind the proxy shares the proxy's address",
    )
    max_pending_password_checks: Annotated[int, Field(ge=1, le=32)] = Field(
        default=8,
        description="password checks (login form, HTTP basic) waiting for or on the two hashing threads; one more "
        "is refused with 503 and Retry-After, unchecked but counted by the login throttle, so wrong passwords from "
        "many addresses cannot hold the API's 40 request threads; tokens, sessions and recently verified "
        "basic credentials need no check",
    )

    @model_validator(mode="after")
    def _ordered_durations(self) -> ApiLimits:
        if not self.backoff_base <= self.backoff_max <= self.forget_after:
            raise ValueError("need backoff_base <= backoff_max <= forget_after (a block must not outlast its count)")
        return self

    @model_validator(mode="after")
    def _exports_per_user_within_all(self) -> ApiLimits:
        if self.max_concurrent_exports_per_user > self.max_concurrent_exports:
            raise ValueError(
                f"max_concurrent_exports_per_user ({self.max_concurrent_exports_per_user}) must not exceed "
                f"max_concurrent_exports ({self.max_concurrent_exports}): one caller cannot run more exports than "
                "the API process runs at once"
            )
        return self


class ApiSettings(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    users: list[ApiUser] = []
    tokens: list[ApiToken] = []
    limits: ApiLimits = ApiLimits()
    oidc: OidcSettings | None = Field(default=None, description="single sign-on for the page (recommended)")
    local_login: bool | None = Field(
        default=None,
        description="`users` log in through the page's login form and, for API clients, HTTP basic; "
        "unset: the form only, and only when `oidc` is not configured",
    )
    session: SessionSettings = SessionSettings()

    @field_validator("users", "tokens", mode="before")
    @classmethod
    def _list_from_json_text(cls, value: object) -> object:
        """A secret file (``FLEETPULSE_ALERTS__API__USERS``, a mounted Secret) holds the list as JSON text.

        The parser's message gives a position only, never the text: it holds password hashes.
        """
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise ValueError("not a JSON list: nested too deeply") from None

    @model_validator(mode="after")
    def _one_identity_per_name(self) -> ApiSettings:
        """A local user and a token, or two of either, with one name would be one identity to the audit trail and
        to the per-caller limits: a script's token named like a person would spend that person's export place."""
        seen: dict[str, str] = {}
        entries = [(f"users[{i}]", u.name) for i, u in enumerate(self.users)]
        entries += [(f"tokens[{i}]", t.name) for i, t in enumerate(self.tokens)]
        for entry, name in entries:
            first = seen.setdefault(name.casefold(), entry)
            if first != entry:  # the entries, never the name: configuration errors name fields, not values
                raise ValueError(
                    f"users and tokens need distinct names (case-insensitive): {first} and {entry} share one"
                )
        return self

    @property
    def login_form(self) -> bool:
        """The page offers the local login form: asked for, or the default without single sign-on."""
        return self.local_login if self.local_login is not None else self.oidc is None

    @property
    def basic_auth(self) -> bool:
        """API clients may send HTTP basic credentials: only when local login is switched on explicitly."""
        return self.local_login is True


class OutboxSettings(_Frozen):
    """Retries with capped, jittered exponential backoff; a row is never dropped, only delayed.

    Transient failures wait up to ``backoff_max``; a permanent one (rejected login, 4xx) marks
    the row as needing attention and waits ``attention_recheck`` (or an admin's outbox retry).
    """

    backoff_base: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(seconds=5)
    backoff_max: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(minutes=15)
    attention_recheck: Annotated[timedelta, Field(gt=timedelta(0))] = timedelta(hours=6)
    batch: Annotated[int, Field(ge=1, le=10_000)] = 100

    @model_validator(mode="after")
    def _base_within_max(self) -> OutboxSettings:
        if self.backoff_base > self.backoff_max:
            raise ValueError("outbox.backoff_base must not exceed outbox.backoff_max")
        return self


class ConsumerSettings(_Frozen):
    group_id: str = "fleetpulse-tickets"
    metrics_host: str = Field(default="127.0.0.1", description="address of the consumer's Prometheus /metrics")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65_535, description="serve the outbox and coverage gauges on this port; None: not served"
    )
    silent_after: timedelta = Field(
        default=timedelta(hours=48),
        description="a device whose last inventory is older is counted as silent: the agent's daily inventory "
        "(inventory_interval_s) plus the 24 h of silence the coverage alert is about",
    )
    poll_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 500
    history_min_interval: timedelta = Field(
        default=timedelta(hours=1), description="keep at most one risk point per component per interval"
    )
    history_retention: timedelta = timedelta(days=180)
    feature_log_retention: Annotated[timedelta, Field(ge=timedelta(days=1))] = Field(
        default=timedelta(days=730),
        description="feature-log rows kept this long: a year to train on plus the labelled period (deploy/retention.yaml)",
    )
    audit_retention: Annotated[timedelta, Field(ge=timedelta(days=1))] = Field(
        default=timedelta(days=1095), description="audit trail kept this long (NIS2 evidence; deploy/retention.yaml)"
    )
    max_clock_skew: timedelta = Field(
        default=timedelta(minutes=10),
        description="inventory dated further in the future than this is dead-lettered (as the stream worker does)",
    )


class AlertSettings(_Frozen):
    store_url: str = "sqlite:///.local/tickets.db"
    policy: AlertPolicy = AlertPolicy()
    storm: StormPolicy = StormPolicy()
    api: ApiSettings = ApiSettings()
    outbox: OutboxSettings = OutboxSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    connectors: list[ConnectorConfig] = []
    forecast: ForecastSettings = ForecastSettings()

    @model_validator(mode="after")
    def _unique_connector_names(self) -> AlertSettings:
        names = [c.name for c in self.connectors]
        if len(names) != len(set(names)) or "labels" in names:
            raise ValueError("connector names must be unique and not 'labels' (reserved for the labels topic)")
        return self

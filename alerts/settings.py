"""Settings of the alert policy, ticket store, API and ITSM connectors."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from fleetpulse.alerts.connectors.config import ConnectorConfig
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.alerts.storm import StormPolicy

Role = Literal["fleet_manager", "it_support", "admin"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiUser(_Frozen):
    """A login for HTTP basic auth; the secret is stored only as a hash (``fleetpulse tickets hash-secret``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    role: Role
    password_hash: str = Field(
        description="$argon2id$... from `fleetpulse tickets hash-secret` (older pbkdf2_sha256$... hashes still verify)"
    )


class ApiToken(_Frozen):
    """A bearer token for machines (e.g. ITSM pulling the export); stored as its SHA-256 (tokens are random)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    role: Role
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ApiLimits(_Frozen):
    """What one client may cost the API: request body size and the login throttle.

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

    @model_validator(mode="after")
    def _ordered_durations(self) -> ApiLimits:
        if not self.backoff_base <= self.backoff_max <= self.forget_after:
            raise ValueError("need backoff_base <= backoff_max <= forget_after (a block must not outlast its count)")
        return self


class ApiSettings(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    users: list[ApiUser] = []
    tokens: list[ApiToken] = []
    limits: ApiLimits = ApiLimits()


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

    @model_validator(mode="after")
    def _unique_connector_names(self) -> AlertSettings:
        names = [c.name for c in self.connectors]
        if len(names) != len(set(names)) or "labels" in names:
            raise ValueError("connector names must be unique and not 'labels' (reserved for the labels topic)")
        return self

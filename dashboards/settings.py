"""Settings of Grafana provisioning (``fleetpulse dashboards push``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fleetpulse.config import refuse_credentials_in_clear


class InfluxSourceSettings(BaseModel):
    """The InfluxQL data source Grafana reads.

    InfluxDB 1.x: ``database`` plus optional basic auth. InfluxDB 2.x/3.x: the same
    InfluxQL endpoint through a DBRP mapping (bucket -> database/retention policy);
    authenticate with ``token`` (sent as ``Authorization: Token ...``); queries hit
    the mapping marked default, so no retention policy is configured here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:8086"
    database: str = Field(default="fleetpulse", description="1.x database, or the DBRP database on 2.x/3.x")
    token: SecretStr | None = Field(default=None, description="InfluxDB 2.x/3.x API token (read-only)")
    username: str | None = None
    password: SecretStr | None = None
    http_method: Literal["GET", "POST"] = "POST"
    tls_skip_verify: bool = False
    allow_insecure: bool = Field(default=False, description="send credentials over http:// (a protected network only)")

    @model_validator(mode="after")
    def _one_auth(self) -> InfluxSourceSettings:
        if self.token is not None and self.username is not None:
            raise ValueError("set either influx.token (2.x/3.x) or influx.username/password (1.x), not both")
        sends = self.token is not None or self.password is not None
        refuse_credentials_in_clear(self.url, "influx.url", sends, self.allow_insecure)
        return self


class RollupSettings(BaseModel):
    """``fleetpulse dashboards rollup``: where to read scores and write ``fleet`` points, and how often.

    Needs write access to the database/bucket, unlike Grafana's read-only data source.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    influx: InfluxSourceSettings = InfluxSourceSettings()
    every_s: float = Field(default=300.0, ge=10.0)
    tickets: bool = Field(default=True, description="also snapshot ticket counts from alerts.store_url")


class GrafanaSettings(BaseModel):
    """Where Grafana is and how dashboards are named there.

    UIDs are stable so pushing again overwrites instead of duplicating; every
    dashboard lands in one folder so permissions can be granted once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = Field(default=None, description="service-account token (Editor on the folder)")
    username: str | None = None
    password: SecretStr | None = None
    org_id: int | None = None
    verify_tls: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    folder_uid: str = Field(default="fleetpulse", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    folder_title: str = "fleetpulse"
    datasource_name: str = "fleetpulse InfluxDB"
    datasource_uid: str = Field(default="fleetpulse-influxdb", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    influx: InfluxSourceSettings = InfluxSourceSettings()
    rollup: RollupSettings = RollupSettings()

    allow_insecure: bool = Field(default=False, description="send credentials over http:// (a protected network only)")

    @model_validator(mode="after")
    def _one_auth(self) -> GrafanaSettings:
        if self.token is not None and self.username is not None:
            raise ValueError("set either grafana.token or grafana.username/password, not both")
        sends = self.token is not None or self.password is not None
        refuse_credentials_in_clear(self.url, "grafana.url", sends, self.allow_insecure)
        return self

"""Settings of the server deployable (worker, ticketing, API, dashboards): one TOML file + env.

Sections live with the component that reads them; this class only assembles them.
Environment variables: ``FLEETPULSE_<SECTION>__<FIELD>``, e.g. ``FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetpulse.agents.mdm_settings import MdmSettings
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.config import KafkaSettings
from fleetpulse.dashboards.settings import GrafanaSettings
from fleetpulse.models.settings import ModelSettings
from fleetpulse.streams.settings import StreamSettings


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETPULSE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    streams: StreamSettings = StreamSettings()
    models: ModelSettings = ModelSettings()
    alerts: AlertSettings = AlertSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    mdm: MdmSettings = MdmSettings()

"""Settings of Grafana provisioning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class GrafanaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None

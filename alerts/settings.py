"""Settings of the alert policy, ticket store, API and ITSM connectors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fleetpulse.alerts.policy import AlertPolicy


class AlertSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    store_url: str = "sqlite:///.local/tickets.db"
    policy: AlertPolicy = AlertPolicy()

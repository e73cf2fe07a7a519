"""Settings of the parts forecast (:mod:`~fleetpulse.models.forecast`), light enough for the server settings.

The CO2e defaults are the repair-versus-replacement figures of :mod:`fleetpulse.alerts.actions`
(sources there and in docs/explanation/forecast.md); the annual failure rates of parts whose
rule says "clear" are stated assumptions, documented on the same page.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fleetpulse.alerts.actions import DEVICE_CO2E_KG, PART_CO2E_KG
from fleetpulse.contract import Component, DeviceKind

DISK_ODDS_FACTOR = 0.0678
"""Odds of a 30-day disk failure per drive-day over those per training instant, on the Backblaze
training drives before the shipped model's cut-off; ``fleetpulse forecast --backtest`` prints it
and tests/unit/test_forecast_backtest.py checks it against that computation on the shared data."""


class ForecastSettings(BaseModel):
    """Assumptions of the forecast; every figure is a documented default (docs/explanation/forecast.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coverage: float = Field(default=0.9, gt=0.0, lt=1.0, description="nominal probability of the interval")
    annual_failure_rate: dict[Component, float] = Field(
        default={
            Component.BATTERY: 0.05,
            Component.THERMAL: 0.02,
            Component.MEMORY: 0.005,
        },
        description="yearly replacement rate of a part its rule scores 'clear' (a level, not a probability)",
    )
    disk_odds_factor: float = Field(
        default=DISK_ODDS_FACTOR,
        gt=0.0,
        le=1.0,
        description="odds multiplier from the disk model's per-instant calibration to a per-day base rate",
    )
    device_co2e_kg: dict[DeviceKind, float] = Field(default_factory=lambda: dict(DEVICE_CO2E_KG))
    part_co2e_kg: dict[str, float] = Field(
        default_factory=lambda: {part_key(c, m): kg for (c, m), kg in PART_CO2E_KG.items()},
        description="'<component>' or '<component>:mobile' -> embodied CO2e of the spare part",
    )
    max_score_age_days: int = Field(default=14, ge=1, le=365, description="older latest scores are left out")
    cache_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="seconds a computed forecast is reused per scope by the page and API (0: every request)",
    )


def part_key(component: Component, mobile: bool) -> str:
    return f"{component.value}:mobile" if mobile else component.value

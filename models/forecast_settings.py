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

SPREAD_SHAPE = 0.78
DISPERSION = 0.024


class CalibrationPrior(BaseModel):
    """What the forecast assumes about a hardware model before the fleet has outcomes for it.

    The spread and dispersion defaults are measured on the Backblaze drive models in the six
    30-day windows before the disk model's cut-off (``fleetpulse forecast --backtest`` prints
    them): how far one model's failure rate strays from the pooled one, and how much one
    window's count strays beyond Poisson noise. The weights say how many models' or windows'
    worth of evidence the prior counts for against the fleet's own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spread_shape: float = Field(
        default=SPREAD_SHAPE, gt=0.0, description="gamma shape of a model's factor around the pooled one (1/CV^2)"
    )
    spread_weight: float = Field(default=3.0, ge=0.0, description="hardware models' worth of evidence of the spread")
    pooled_strength: float = Field(
        default=2.0, gt=0.0, description="expected failures' worth of evidence that the pooled factor is 1"
    )
    dispersion: float = Field(
        default=DISPERSION, ge=0.0, description="variance of a window's rate beyond Poisson (0: Poisson-binomial)"
    )
    dispersion_weight: float = Field(
        default=400.0, ge=0.0, description="evidence of the dispersion prior, in squared expected failures"
    )
    half_life_days: float | None = Field(
        default=180.0, gt=0.0, description="age at which a past window counts half (None: all count fully)"
    )
    history_windows: int = Field(
        default=12, ge=0, le=60, description="past 30-day windows of the fleet's own outcomes read per forecast"
    )


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
    calibration: CalibrationPrior = CalibrationPrior()
    calibration_cache_s: int = Field(
        default=3600,
        ge=0,
        le=86_400,
        description="seconds the factors learned from the fleet's outcomes are reused (labels arrive by the day)",
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

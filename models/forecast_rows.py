"""What the parts forecast reads and writes, without numpy or scipy.

The API imports these types at start; the computation (:mod:`~fleetpulse.models.forecast`)
is imported on the first forecast request, so a server nobody asks for a forecast stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from fleetpulse.contract import Component, DeviceKind
from fleetpulse.models.forecast_settings import CalibrationPrior

WINDOWS = (30, 90)
PARTS = (Component.DISK, Component.BATTERY, Component.THERMAL, Component.MEMORY)
"""Replaceable parts; the whole-device anomaly score asks for a diagnosis, not a part."""
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PartRisk:
    """The latest score of one device component, with where the part is (site) and what it sits in."""

    component: Component
    site: str
    hardware_model: str
    device_kind: DeviceKind | None
    risk: float
    horizon_days: int
    replace_in_days: float | None = None
    """The part's own estimate of days until it needs replacing (battery: until 60 %), if it makes one."""


class ForecastRow(BaseModel):
    """Expected replacements of one component, hardware model and site within ``window_days``."""

    model_config = ConfigDict(frozen=True)

    component: Component
    hardware_model: str
    site: str
    window_days: int
    parts: int
    expected: float
    low: int
    high: int
    coverage: float
    co2e_avoided_kg: float
    """Expected embodied CO2e avoided when these parts are repaired instead of the devices replaced."""


BATTERY_STRATA = ((0.0, "due"), (30.0, "estimate <= 30 d"), (90.0, "estimate <= 90 d"), (365.0, "estimate <= 365 d"))
"""The bins of :data:`fleetpulse.models.battery_interval.BIN_EDGES` (that module needs numpy)."""


def calibration_stratum(component: Component, replace_in_days: float | None) -> str:
    """The part of a component the forecast recalibrates on its own: batteries per bin of their
    end-of-life estimate (the lab-cell interval that turns an estimate into a probability errs
    differently per bin), every other component as a whole ("")."""
    if component is not Component.BATTERY:
        return ""
    if replace_in_days is None:
        return "no estimate"
    return next((name for edge, name in BATTERY_STRATA if replace_in_days <= edge), "estimate > 365 d")


def calibration_key(component: Component, hardware_model: str, stratum: str = "") -> str:
    """Key of a factor: a hardware model's, or with ``hardware_model`` "" the pooled one."""
    return f"{component.value}|{hardware_model}|{stratum}"


class PartCalibration(BaseModel):
    """A rate factor on the window probabilities of one component (of one hardware model, or pooled)."""

    model_config = ConfigDict(frozen=True)

    factor: float = 1.0
    shape: float | None = None
    """Gamma posterior shape of the factor (its squared coefficient of variation is ``1 / shape``);
    None: the factor is taken as exact."""


class Calibration(BaseModel):
    """What the fleet's past forecast windows say about the forecast (:mod:`~fleetpulse.models.forecast_calibration`)."""

    model_config = ConfigDict(frozen=True)

    parts: dict[str, PartCalibration] = {}
    """Per :func:`calibration_key`: the factor of a hardware model with history."""
    pooled: dict[str, PartCalibration] = {}
    """Per pooled key (hardware model ""): the factor of a hardware model without history."""
    dispersion: dict[str, float] = {}
    """Per pooled key: the window-to-window variance of the rate beyond Poisson."""
    prior: CalibrationPrior = CalibrationPrior()

    def of(self, component: Component, hardware_model: str, stratum: str = "") -> PartCalibration:
        found = self.parts.get(calibration_key(component, hardware_model, stratum))
        found = found or self.pooled.get(calibration_key(component, "", stratum))
        if found is not None:
            return found
        return PartCalibration(factor=1.0, shape=self.prior.spread_shape)

    def dispersion_of(self, component: Component, stratum: str = "") -> float:
        return self.dispersion.get(calibration_key(component, "", stratum), self.prior.dispersion)

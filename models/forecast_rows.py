"""What the parts forecast reads and writes, without numpy or scipy.

The API imports these types at start; the computation (:mod:`~fleetpulse.models.forecast`)
is imported on the first forecast request, so a server nobody asks for a forecast stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from fleetpulse.contract import Component, DeviceKind

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

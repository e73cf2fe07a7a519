"""What a fleet manager should do about an alert, how urgent it is, and the CO2e a repair avoids.

Pure functions: the ticket service calls them when it opens a ticket, the tests pin them down.

Repair before replacement: a failing battery, SSD, fan or memory module is swapped
where the device class allows it; a part still under warranty is claimed instead of
bought; only parts that are soldered in (phone/tablet storage and memory) or a
failing device as a whole lead to a replacement device.

CO2e figures are order-of-magnitude estimates of *embodied* (manufacturing + transport)
emissions, not measurements; they exist so repairs can be compared with replacements:

- Whole devices (cradle-to-gate share of the vendors' product carbon footprints):
  laptop 250 kg (Dell Latitude/HP EliteBook 14" PCFs report ~200-330 kg), desktop 300 kg
  without monitor (Dell OptiPlex PCFs ~250-400 kg), phone 60 kg (Apple iPhone product
  environmental reports 50-80 kg; Fraunhofer IZM Fairphone 4 LCA 2022: ~40 kg),
  tablet 100 kg (Apple iPad reports 80-130 kg).
- Diagnosis first (whole-device signals, unknown device): no CO2e is claimed until a fault is known.
- Spare parts: laptop battery 8 kg and phone battery 2 kg (Li-ion cells ~100-150 kg CO2e/kWh
  at 50-60 Wh resp. 15 Wh, plus casing/BMS); 512 GB SSD 30 kg (Tannu & Nair 2023, "The dirty
  secret of SSDs", ~0.03-0.16 kg/GB, lower end for current NAND); memory module 10 kg;
  fan/thermal paste service 1 kg.

Avoided = device footprint - part footprint when repair (or a warranty swap, whose part
the vendor supplies) keeps the device in service; 0 when the device is replaced.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fleetpulse.contract.v1 import Component, DeviceInventory, DeviceKind

Urgency = Literal["low", "medium", "high", "critical"]
URGENCY_RANK: dict[Urgency, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

DEVICE_CO2E_KG: dict[DeviceKind, float] = {
    DeviceKind.LAPTOP: 250.0,
    DeviceKind.DESKTOP: 300.0,
    DeviceKind.PHONE: 60.0,
    DeviceKind.TABLET: 100.0,
}
PART_CO2E_KG: dict[tuple[Component, bool], float] = {
    # (component, mobile device?) -> embodied CO2e of the spare part
    (Component.BATTERY, False): 8.0,
    (Component.BATTERY, True): 2.0,
    (Component.DISK, False): 30.0,
    (Component.MEMORY, False): 10.0,
    (Component.THERMAL, False): 1.0,
    (Component.THERMAL, True): 1.0,
}
"""Parts that can be swapped; a missing (component, mobile) pair means the part is not serviceable."""

_PART_NAMES = {
    Component.BATTERY: "battery",
    Component.DISK: "SSD/disk",
    Component.MEMORY: "memory module",
    Component.THERMAL: "fan and thermal paste",
}


class ActionPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["repair", "warranty_claim", "replace_device", "diagnose"]
    text: str
    co2e_avoided_kg: float


def urgency(risk: float, days_to_failure: float | None, days_to_failure_low: float | None = None) -> Urgency:
    """Urgency from the failure probability and the pessimistic (lower-bound) time to failure."""
    days = days_to_failure_low if days_to_failure_low is not None else days_to_failure
    if risk >= 0.9 or (days is not None and days <= 7):
        return "critical"
    if risk >= 0.75 or (days is not None and days <= 14):
        return "high"
    if risk >= 0.5 or (days is not None and days <= 30):
        return "medium"
    return "low"


def under_warranty(inventory: DeviceInventory | None, on: date) -> bool:
    return inventory is not None and inventory.warranty_end is not None and inventory.warranty_end >= on


def recommend(component: Component, kind: DeviceKind | None, inventory: DeviceInventory | None, on: date) -> ActionPlan:
    """The cheapest action that keeps the device working: warranty claim, then repair, then replacement.

    Whole-device signals (boot time, crashes) and devices without inventory get ``diagnose``:
    nothing justifies scrapping a device before someone has looked at it.
    """
    kind = inventory.kind if inventory is not None else kind
    device_co2e = DEVICE_CO2E_KG.get(kind, 0.0) if kind is not None else 0.0
    mobile = kind in (DeviceKind.PHONE, DeviceKind.TABLET)
    part_co2e = PART_CO2E_KG.get((component, mobile))
    vendor = (inventory.vendor if inventory else None) or "the vendor"
    warranty = under_warranty(inventory, on)
    claim = (
        f" If a fault is confirmed, claim it with {vendor} under warranty (until {inventory.warranty_end})."
        if warranty and inventory is not None
        else ""
    )
    if component is Component.DEVICE:
        return ActionPlan(
            kind="diagnose",
            text="Diagnose first: vendor hardware diagnostics and an OS check (updates, drivers, reimage); the "
            f"signals concern the whole device. Repair what is found, replace only if unrepairable.{claim}",
            co2e_avoided_kg=0.0,
        )
    part = _PART_NAMES.get(component, component.value)
    if kind is None:
        return ActionPlan(
            kind="diagnose",
            text=f"No inventory record: check whether the {part} can be swapped on this device and swap it if so; "
            "replace the device only if it cannot be serviced.",
            co2e_avoided_kg=0.0,
        )
    if part_co2e is None:
        if warranty and inventory is not None:
            return ActionPlan(
                kind="warranty_claim",
                text=f"File a warranty claim with {vendor} for the device (warranty until {inventory.warranty_end}): "
                f"the {part} cannot be swapped on a {kind.value}. Back up user data first.",
                co2e_avoided_kg=0.0,
            )
        return ActionPlan(
            kind="replace_device",
            text=f"Replace the device: the {part} cannot be swapped on a {kind.value}. Back up user data, then hand "
            "the old device to certified refurbishment or recycling.",
            co2e_avoided_kg=0.0,
        )
    part = _PART_NAMES[component]
    avoided = round(max(device_co2e - part_co2e, 0.0), 1)
    backup = " Back up user data first." if component is Component.DISK else ""
    if warranty and inventory is not None:
        return ActionPlan(
            kind="warranty_claim",
            text=f"File a warranty claim with {vendor} for the {part} (warranty until {inventory.warranty_end}); "
            f"no purchase needed.{backup}",
            co2e_avoided_kg=avoided,
        )
    return ActionPlan(
        kind="repair",
        text=f"Replace the {part}; the device stays in service (no new device needed).{backup}",
        co2e_avoided_kg=avoided,
    )


STORM_PREFIX = (
    "Fleet-wide problem: rule out the common cause (firmware, driver, cabling, batch) before swapping parts. "
)


def storm_first(text: str) -> str:
    """Many identical alerts at once point to one cause; parts are swapped only once that is ruled out."""
    return text if text.startswith(STORM_PREFIX) else STORM_PREFIX + text

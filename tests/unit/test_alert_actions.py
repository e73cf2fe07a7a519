"""Pure ticket content rules: urgency, repair-before-replace recommendation, CO2e, storm keys."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetpulse.alerts import actions, storm
from fleetpulse.alerts.connectors.base import ticket_notification
from fleetpulse.alerts.store.repository import TicketView
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import Component, DeviceKind, Factor
from tests.alerts_support import make_alert, make_inventory

TODAY = date(2026, 11, 1)


@pytest.mark.parametrize(
    ("risk", "days", "low", "expected"),
    [
        (0.95, None, None, "critical"),
        (0.55, 30.0, 5.0, "critical"),
        (0.8, 60.0, None, "high"),
        (0.5, 20.0, 12.0, "high"),
        (0.55, 90.0, None, "medium"),
        (0.3, 25.0, None, "medium"),
        (0.3, None, None, "low"),
    ],
)
def test_urgency(risk: float, days: float | None, low: float | None, expected: str) -> None:
    assert actions.urgency(risk, days, low) == expected


@given(st.floats(0, 1), st.one_of(st.none(), st.floats(0, 36500)), st.one_of(st.none(), st.floats(0, 36500)))
def test_urgency_never_drops_when_risk_rises(risk: float, days: float | None, low: float | None) -> None:
    higher = min(1.0, risk + 0.2)
    assert (
        actions.URGENCY_RANK[actions.urgency(higher, days, low)]
        >= actions.URGENCY_RANK[actions.urgency(risk, days, low)]
    )


def test_laptop_battery_is_repaired_and_avoids_most_of_the_device_footprint() -> None:
    plan = actions.recommend(Component.BATTERY, None, make_inventory(warranty_end=date(2024, 1, 1)), TODAY)
    assert plan.kind == "repair"
    assert "battery" in plan.text
    assert plan.co2e_avoided_kg == actions.DEVICE_CO2E_KG[DeviceKind.LAPTOP] - 8.0


def test_part_under_warranty_is_claimed_not_bought() -> None:
    plan = actions.recommend(Component.DISK, None, make_inventory(warranty_end=date(2027, 6, 30)), TODAY)
    assert plan.kind == "warranty_claim"
    assert "Lenovo" in plan.text
    assert "2027-06-30" in plan.text
    assert plan.co2e_avoided_kg > 0


def test_phone_storage_cannot_be_swapped_so_the_device_is_replaced() -> None:
    phone = make_inventory("ph-1", kind=DeviceKind.PHONE, warranty_end=None)
    plan = actions.recommend(Component.DISK, None, phone, TODAY)
    assert plan.kind == "replace_device"
    assert plan.co2e_avoided_kg == 0.0
    assert actions.recommend(Component.BATTERY, None, phone, TODAY).kind == "repair"


def test_without_inventory_nothing_is_assumed() -> None:
    plan = actions.recommend(Component.BATTERY, None, None, TODAY)
    assert plan.kind == "diagnose"
    assert "check whether the battery can be swapped" in plan.text
    assert plan.co2e_avoided_kg == 0.0
    assert actions.recommend(Component.BATTERY, DeviceKind.DESKTOP, None, TODAY).kind == "repair"


@given(st.sampled_from(list(Component)), st.sampled_from(list(DeviceKind)), st.booleans())
def test_every_plan_is_explained_and_non_negative(component: Component, kind: DeviceKind, warranty: bool) -> None:
    inventory = make_inventory(kind=kind, warranty_end=date(2030, 1, 1) if warranty else None)
    plan = actions.recommend(component, None, inventory, TODAY)
    assert plan.text
    assert 0.0 <= plan.co2e_avoided_kg <= max(actions.DEVICE_CO2E_KG.values())
    if component is Component.DEVICE:
        assert plan.kind == "diagnose"
    elif warranty:
        assert plan.kind == "warranty_claim"


def test_whole_device_signals_lead_to_diagnosis_not_scrapping() -> None:
    plan = actions.recommend(Component.DEVICE, None, make_inventory(warranty_end=date(2027, 1, 1)), TODAY)
    assert plan.kind == "diagnose"
    assert "vendor hardware diagnostics" in plan.text
    assert "under warranty (until 2027-01-01)" in plan.text


def test_storm_key_uses_the_strongest_signal_and_device_model() -> None:
    alert = make_alert(
        factors=[
            Factor(feature="a", contribution=0.1, text="a"),
            Factor(feature="firmware_crc", contribution=-0.6, text="crc"),
        ]
    )
    assert storm.storm_key(alert, "EliteBook 840 G8") == "disk|firmware_crc|EliteBook 840 G8"
    assert storm.storm_key(make_alert(factors=[]), None) == "disk|unspecified|unknown"
    assert storm.storm_key(make_alert("mdm-0a1b", factors=[]), "Latitude 7420") == "disk|unspecified|mdm:Latitude 7420"


def test_storm_needs_threshold_raises_inside_the_window() -> None:
    policy = storm.StormPolicy(window=timedelta(hours=1), threshold=3)
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert not storm.is_storm(policy, at, [at - timedelta(minutes=5)])
    assert storm.is_storm(policy, at, [at - timedelta(minutes=5), at - timedelta(minutes=50)])
    assert not storm.is_storm(policy, at, [at - timedelta(minutes=5), at - timedelta(minutes=61)])
    assert storm.group_id("k", at) == storm.group_id("k", at)


def test_ticket_notification_is_plain_language() -> None:
    view = TicketView.model_validate(
        {
            "id": 7,
            "device_id": "pc-1",
            "component": "battery",
            "component_id": "",
            "state": "open",
            "urgency": "high",
            "risk": 0.81,
            "days_to_failure": 20.0,
            "days_to_failure_low": 9.0,
            "days_to_failure_high": 41.0,
            "model_name": "battery-fade",
            "model_version": "3",
            "evidence": [{"feature": "health_ratio", "text": "battery holds 61% of its design capacity"}],
            "action_kind": "repair",
            "recommended_action": "Replace the battery",
            "co2e_avoided_kg": 242.0,
            "storm_group": None,
            "alert_cleared_at": None,
            "opened_at": datetime(2026, 11, 1, tzinfo=UTC),
            "updated_at": datetime(2026, 11, 1, tzinfo=UTC),
        }
    )
    note = ticket_notification(view.to_contract())
    assert note.dedup_key == "fleetpulse-ticket-7"
    assert "about 20 days (9-41)" in note.body
    assert "battery holds 61%" in note.body
    assert "242 kg" in note.body

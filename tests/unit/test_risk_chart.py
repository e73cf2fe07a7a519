"""The device page's risk chart draws each component's raise threshold as the worker serves it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import HistoryPoint, TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.alerts.web.plot import risk_svg, threshold_lines
from fleetpulse.contract import Component, RiskScore
from fleetpulse.models.registry import ScorerSet
from fleetpulse.serving import serving_policy
from fleetpulse.settings import ServerSettings
from tests.alerts_support import T0, make_inventory

PASSWORD = "correct horse battery staple"


class TrainedDiskChampion:
    """A disk champion whose stored operating point is the trained model's 0.292."""

    component = Component.DISK

    def alert_thresholds(self, cap: str) -> tuple[float, float]:
        return (0.292, 0.146)


def point(component: str, risk: float, hours: int = 0) -> HistoryPoint:
    return HistoryPoint(component=component, component_id="", at=T0 + timedelta(hours=hours), risk=risk)


def test_threshold_lines_follow_the_served_policy_per_component() -> None:
    policy = serving_policy(ServerSettings(), ScorerSet(champions=[TrainedDiskChampion()]))
    points = [point("disk", 0.1), point("battery", 0.2), point("thermal", 0.3), point("disk", 0.35, 1)]
    lines = threshold_lines(points, lambda c: policy.thresholds(Component(c)).raise_threshold)
    assert lines == [(0.292, "disk alert 29.2%"), (0.5, "battery, thermal alert 50.0%")]
    svg = risk_svg(points, lambda c: policy.thresholds(Component(c)).raise_threshold)
    assert "disk alert 29.2%" in svg
    assert svg.count('stroke-dasharray="6 4"') == 2, "one line per served level, not the fleet-wide 0.5 alone"


def test_the_device_page_draws_the_disk_models_threshold(tmp_path: Path) -> None:
    settings = AlertSettings.model_validate(
        {
            "store_url": f"sqlite:///{tmp_path / 'tickets.db'}",
            "api": {
                "users": [{"name": "fm", "role": "fleet_manager", "password_hash": hash_secret(PASSWORD)}],
                "local_login": True,  # Basic for this scripted client
            },
        }
    )
    store = TicketStore.open(settings.store_url)
    try:
        service = TicketService(store, settings)
        service.apply_inventory(make_inventory("pc-7"))
        service.record_score(
            RiskScore(
                device_id="pc-7",
                component=Component.DISK,
                risk=0.31,
                model_name="disk-gbm",
                model_version="1",
                report_seq=1,
                collected_at=T0,
                scored_at=T0,
            )
        )
        app = create_app(settings, store)
        with TestClient(app) as client:
            fleet_wide = client.get("/devices/pc-7", auth=("fm", PASSWORD)).text
            app.state.serving_policy = serving_policy(
                ServerSettings(alerts=settings), ScorerSet(champions=[TrainedDiskChampion()])
            )
            page = client.get("/devices/pc-7", auth=("fm", PASSWORD)).text
    finally:
        store.close()
    assert "disk alert 50.0%" in fleet_wide, "without the served policy: the configured one"
    assert "disk alert 29.2%" in page
    assert "disk alert 50.0%" not in page

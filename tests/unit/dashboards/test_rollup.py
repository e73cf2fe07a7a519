"""The fleet rollup's pure part (InfluxDB JSON -> points) and its command's failure handling."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.compat import UTC
from fleetpulse.dashboards.rollup import (
    device_points,
    device_queries,
    rollup_points,
    rollup_queries,
    score_distribution_query,
    score_points,
)
from fleetpulse.dashboards.schema import FLEET, FLEET_DEVICES, FLEET_SCORES, SILENT_DEVICE

AT = datetime(2026, 11, 20, tzinfo=UTC)


def _series(tags: dict[str, str], **values: float) -> dict[str, object]:
    return {"name": "risk", "tags": tags, "columns": ["time", *values], "values": [[0, *values.values()]]}


def test_groups_without_risky_components_count_zero() -> None:
    disk_a = {"component": "disk", "site": "A", "device_model": "M1"}
    battery_b = {"component": "battery", "site": "B", "device_model": "M2"}
    stats = [
        _series(disk_a, components=10, mean_risk=0.4, max_risk=0.9),
        _series(battery_b, components=3, mean_risk=0.1, max_risk=0.2),
    ]
    at_risk = [_series(disk_a, at_risk=4)]
    points = {p.tags["site"]: p for p in rollup_points(stats, at_risk, AT)}
    assert points["A"].fields == {"components": 10, "at_risk": 4, "mean_risk": 0.4, "max_risk": 0.9}
    assert points["B"].fields["at_risk"] == 0
    assert all(p.measurement == FLEET.name and set(p.tags) == set(FLEET.tags) for p in points.values())
    assert all(set(p.fields) == set(FLEET.fields) and p.time == AT for p in points.values())


def test_device_points_count_reporting_and_risky_devices() -> None:
    a, b = {"site": "A", "device_model": "M1"}, {"site": "B", "device_model": "M1"}
    points = device_points([_series(a, reporting=7), _series(b, reporting=2)], [_series(a, at_risk=1)], AT)
    assert [(p.tags, p.fields) for p in points] == [
        (a, {"reporting": 7, "at_risk": 1}),
        (b, {"reporting": 2, "at_risk": 0}),
    ]
    assert all(p.measurement == FLEET_DEVICES.name for p in points)


def test_queries_window_the_last_day_of_champion_scores() -> None:
    stats, at_risk = rollup_queries(AT, 0.5)
    end_ms = int(AT.timestamp() * 1000)
    for query in (stats, at_risk):
        assert f"time > {end_ms - 86_400_000}ms AND time <= {end_ms}ms" in query
        assert """"role" = 'champion'""" in query
    assert 'WHERE "risk" >= 0.5' in at_risk
    reporting, devices_at_risk = device_queries(AT, 0.5)
    assert f"time > {end_ms - 86_400_000}ms" in reporting
    assert 'max("risk")' in devices_at_risk
    assert 'WHERE "risk" >= 0.5 GROUP BY "site", "device_model"' in devices_at_risk


def test_rollup_command_fails_clearly_when_influxdb_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FLEETPULSE_GRAFANA__ROLLUP__INFLUX__URL", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["dashboards", "rollup", "--once"])
    assert result.exit_code == 1
    assert "fleet rollup failed" in result.output


def test_score_points_keep_role_and_model_version() -> None:
    tags = {"component": "disk", "role": "challenger", "model_name": "m", "model_version": "2"}
    (point,) = score_points([_series(tags, components=5, mean=0.2, p50=0.1, p90=0.5, p99=0.9)], AT)
    assert point.measurement == FLEET_SCORES.name
    assert point.tags == tags
    assert point.fields == {"components": 5, "mean": 0.2, "p50": 0.1, "p90": 0.5, "p99": 0.9}
    assert 'percentile("risk", 99)' in score_distribution_query(AT)


def test_ticket_points_follow_the_ticket_schema() -> None:
    from fleetpulse.alerts.store.repository import TicketCount
    from fleetpulse.dashboards.rollup import ticket_points
    from fleetpulse.dashboards.schema import TICKET

    counts = [TicketCount(component="battery", state="done", outcome="confirmed_fault", site="Town Hall", count=3)]
    (point,) = ticket_points(counts, AT)
    assert point.measurement == TICKET.name
    assert set(point.tags) == set(TICKET.tags)
    assert set(point.fields) == set(TICKET.fields)
    assert point.to_line_protocol() == (
        "ticket,component=battery,outcome=confirmed_fault,site=Town\\ Hall,state=done count=3i 1795132800000000000"
    )


def test_silent_device_points_name_each_silent_device_with_hours_since_its_inventory(tmp_path: Path) -> None:
    from fleetpulse.alerts.settings import AlertSettings
    from fleetpulse.alerts.store.repository import TicketStore
    from fleetpulse.alerts.tickets import TicketService
    from fleetpulse.dashboards.rollup import silent_device_points
    from tests.alerts_support import make_inventory

    store = TicketStore.open(f"sqlite:///{tmp_path / 'tickets.db'}")
    service = TicketService(store, AlertSettings())
    service.apply_inventory(make_inventory("pc-quiet", site="Library", updated_at=AT - timedelta(hours=72)))
    service.apply_inventory(make_inventory("pc-fine", site="Library", updated_at=AT - timedelta(hours=3)))
    (point,) = silent_device_points(store.silent_devices(AT - timedelta(hours=48)), AT)
    store.close()
    assert point.measurement == SILENT_DEVICE.name
    assert set(point.tags) == set(SILENT_DEVICE.tags)
    assert set(point.fields) == set(SILENT_DEVICE.fields)
    assert point.tags == {"device_id": "pc-quiet", "site": "Library", "device_model": "ThinkPad T14 Gen 2"}
    assert point.fields == {"hours_silent": 72.0}

"""Every dashboard query runs on real InfluxDB 1.6.7 (Debian) against sink-format data and returns rows.

The data is written as the line protocol ``fleetpulse.streams.points`` produces;
Grafana's macros and template variables are replaced the way Grafana would
(``$timeFilter`` as epoch-millisecond bounds, ``$__interval`` as a duration,
'All' as the regex ``.*``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import SilentDevice
from fleetpulse.cli import app
from fleetpulse.dashboards.build import build_all
from fleetpulse.dashboards.queries import DashboardQuery, dashboard_queries, fill_macros
from fleetpulse.dashboards.rollup import InfluxV1Api, run_rollup, silent_device_points
from fleetpulse.dashboards.sample import DRILL_DEVICE, END, SITES, START, fleet_points
from fleetpulse.dashboards.schema import EXTRA_MEASUREMENTS, FLEET, FLEET_DEVICES, FLEET_SCORES, SILENT_DEVICE
from fleetpulse.dashboards.settings import InfluxSourceSettings

pytestmark = pytest.mark.integration

ALL = ".*"
SELECTIONS = {
    "all": {"site": ALL, "device_model": ALL, "worker": ALL, "model_name": ALL, "component": ALL},
    "one": {
        "site": SITES[1],
        "device_model": "Latitude 7420",
        "worker": "worker-1",
        "model_name": "hazard-gbm",
        "component": "disk",
    },
}


QUERIES = dashboard_queries(build_all())
THRESHOLD = 0.5
FIXED = {"threshold": str(THRESHOLD), "device_id": DRILL_DEVICE}
ROLLUP_HOURS_BEFORE_END = (18, 12, 6, 0)


def substitute(query: DashboardQuery, selection: dict[str, str]) -> str:
    start, end = query.time_range(START, END)
    return fill_macros(query.query, start, end, "1h", {**FIXED, **selection})


@pytest.fixture(scope="module")
def loaded_db(influxdb1_url: str) -> Iterator[tuple[str, str]]:
    database = f"fp_dash_{uuid.uuid4().hex[:8]}"
    lines = [p.to_line_protocol() for p in fleet_points()]
    with httpx.Client(base_url=influxdb1_url, timeout=30) as client:
        client.post("/query", params={"q": f'CREATE DATABASE "{database}"'}).raise_for_status()
        for i in range(0, len(lines), 5000):
            resp = client.post(
                "/write", params={"db": database, "precision": "ns"}, content="\n".join(lines[i : i + 5000])
            )
            assert resp.status_code == 204, resp.text
        # The fleet-health panels read the rollup: produce it the way the CronJob does, at several times.
        api = InfluxV1Api(InfluxSourceSettings(url=influxdb1_url, database=database))
        for hours_before_end in ROLLUP_HOURS_BEFORE_END:
            run_rollup(api, END - timedelta(hours=hours_before_end), THRESHOLD)
        # ... and its silent-device list (from the ticket store's inventory there): one device silent for 2 days
        silent = SilentDevice(
            device_id=DRILL_DEVICE,
            site="Library",
            device_model="Latitude 7420",
            last_inventory_at=END - timedelta(days=2),
        )
        api.write([p.to_line_protocol() for p in silent_device_points([silent], END)])
        api.close()
        yield influxdb1_url, database
        client.post("/query", params={"q": f'DROP DATABASE "{database}"'})


def run(url: str, database: str, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{url}/query", params={"db": database, "q": query, "epoch": "ms"}, timeout=30)
    resp.raise_for_status()
    result = resp.json()["results"][0]
    if "error" in result:
        raise AssertionError(f"InfluxDB error {result['error']!r} for: {query}")
    return list(result.get("series", []))


def test_sample_covers_every_measurement_the_dashboards_read() -> None:
    points = fleet_points()
    measurements = {p.measurement for p in points}
    read = {m for q in QUERIES for m in re.findall(r'FROM "(\w+)"', q.query)}
    rollups = {FLEET.name, FLEET_DEVICES.name, FLEET_SCORES.name, SILENT_DEVICE.name}  # written by the rollup job
    assert read - rollups <= measurements, read - measurements
    for extra in (m for m in EXTRA_MEASUREMENTS if m.name not in rollups):
        sample = next(p for p in points if p.measurement == extra.name)
        assert (set(sample.tags), set(sample.fields)) == (set(extra.tags), set(extra.fields)), extra.name


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize("query", QUERIES, ids=[f"{q.dashboard}:{q.where}" for q in QUERIES])
def test_query_returns_rows(loaded_db: tuple[str, str], query: DashboardQuery, selection: str) -> None:
    url, database = loaded_db
    text = substitute(query, SELECTIONS[selection])
    series = run(url, database, text)
    rows = [row for s in series for row in s.get("values", [])]
    assert rows, f"{query.dashboard} {query.where}: no rows for {text}"
    value_columns = [
        [v for col, v in zip(s["columns"], row, strict=True) if col != "time"] for s in series for row in s["values"]
    ]
    assert any(v is not None for values in value_columns for v in values), (
        f"{query.dashboard} {query.where}: only nulls"
    )


def test_current_state_panels_override_the_range() -> None:
    """Latest-score panels read the last day; rollup-based ones the last hour (the rollup runs every few
    minutes); the silent-device list only the latest rollup (15 min), so a device back in touch drops off."""
    overridden = {q.time_from: q for q in QUERIES if q.time_from is not None}
    assert set(overridden) == {"24h", "1h", "15m"}
    for time_from, seconds in (("24h", 86_400), ("1h", 3_600), ("15m", 900)):
        start, end = overridden[time_from].time_range(START, END)
        assert (end - start).total_seconds() == seconds
    assert all(re.search(r'FROM "fleet(_devices|_scores)?"', q.query) for q in QUERIES if q.time_from == "1h")
    assert all('FROM "silent_device"' in q.query for q in QUERIES if q.time_from == "15m")


def test_rollup_matches_an_independent_count(loaded_db: tuple[str, str]) -> None:
    """The rollup at END equals what the sample's own points say: latest champion score per component in 24 h."""
    url, database = loaded_db
    latest: dict[tuple[str, str, str], tuple[float, float]] = {}
    for p in fleet_points():
        if p.measurement == "risk" and p.tags["role"] == "champion" and END - timedelta(hours=24) < p.time <= END:
            key = (p.tags["device_id"], p.tags["component"], p.tags.get("component_id", ""))
            if key not in latest or p.time.timestamp() >= latest[key][0]:
                latest[key] = (p.time.timestamp(), float(p.fields["risk"]))
    expected_at_risk = sum(1 for _, risk in latest.values() if risk >= THRESHOLD)
    end_ms = int(END.timestamp() * 1000)
    series = run(
        url, database, f'SELECT sum("at_risk"), sum("components"), max("max_risk") FROM "fleet" WHERE time = {end_ms}ms'
    )
    _, at_risk, components, max_risk = series[0]["values"][0]
    assert (at_risk, components) == (expected_at_risk, len(latest))
    assert expected_at_risk > 0
    assert max_risk == max(risk for _, risk in latest.values())
    reporting = {
        p.tags["device_id"]
        for p in fleet_points()
        if p.measurement == "device" and END - timedelta(hours=24) < p.time <= END
    }
    risky_devices = {key[0] for key, (_, risk) in latest.items() if risk >= THRESHOLD}
    series = run(url, database, f'SELECT sum("reporting"), sum("at_risk") FROM "fleet_devices" WHERE time = {end_ms}ms')
    assert series[0]["values"][0][1:] == [len(reporting), len(risky_devices)]
    assert 0 < len(risky_devices) < len(reporting)
    # Score distribution: per (component, role, model version), the count equals the latest scores seen.
    scored: dict[tuple[str, str, str], int] = {}
    seen: set[tuple[str, ...]] = set()
    for p in fleet_points():
        if p.measurement == "risk" and END - timedelta(hours=24) < p.time <= END:
            key = (
                p.tags["device_id"],
                p.tags["component"],
                p.tags.get("component_id", ""),
                p.tags["role"],
                p.tags["model_version"],
            )
            if key not in seen:
                seen.add(key)
                group = (p.tags["component"], p.tags["role"], p.tags["model_version"])
                scored[group] = scored.get(group, 0) + 1
    series = run(
        url,
        database,
        f'SELECT "components", "p50", "p99" FROM "fleet_scores" WHERE time = {end_ms}ms GROUP BY "component", "role", "model_version"',
    )
    got = {(s["tags"]["component"], s["tags"]["role"], s["tags"]["model_version"]): s["values"][0][1] for s in series}
    assert got == scored
    assert all(0 <= s["values"][0][2] <= s["values"][0][3] <= 1 for s in series)


def test_rollup_command_runs_against_influxdb(
    loaded_db: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CronJob's command: fleet rollup plus the ticket snapshot from a real ticket store."""
    from fleetpulse.alerts.store.repository import TicketStore
    from fleetpulse.alerts.tickets import TicketService
    from fleetpulse.contract.v1 import TicketState
    from tests.alerts_support import NOW, make_alert

    store_url = f"sqlite:///{tmp_path / 'tickets.db'}"
    store = TicketStore.open(store_url)
    service = TicketService(store, AlertSettings(store_url=store_url))
    service.apply_alert(make_alert("pc-rollup-1"), NOW)
    service.transition([1], TicketState.DISMISSED, "carol", NOW, outcome="false_alarm")
    store.close()
    url, database = loaded_db
    monkeypatch.setenv("FLEETPULSE_GRAFANA__ROLLUP__INFLUX__URL", url)
    monkeypatch.setenv("FLEETPULSE_GRAFANA__ROLLUP__INFLUX__DATABASE", database)
    monkeypatch.setenv("FLEETPULSE_ALERTS__STORE_URL", store_url)
    result = CliRunner().invoke(app, ["dashboards", "rollup", "--once"])
    assert result.exit_code == 0, result.output
    assert "fleet rollup:" in result.output
    assert "ticket snapshot: 1 points" in result.output
    rows = httpx.get(
        f"{url}/query",
        params={
            "db": database,
            "q": 'SELECT last("count") FROM "ticket" WHERE "outcome" = \'false_alarm\' AND time > now() - 1h',
        },
    ).json()
    assert rows["results"][0]["series"][0]["values"][0][1] == 1

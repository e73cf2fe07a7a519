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
from typing import Any

import httpx
import pytest

from fleetpulse.dashboards.build import build_all
from fleetpulse.dashboards.queries import DashboardQuery, dashboard_queries, fill_macros
from fleetpulse.dashboards.sample import DRILL_DEVICE, END, SITES, START, fleet_points
from fleetpulse.dashboards.schema import EXTRA_MEASUREMENTS

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
FIXED = {"threshold": "0.5", "device_id": DRILL_DEVICE}


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
    assert read <= measurements, read - measurements
    for extra in EXTRA_MEASUREMENTS:
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
    assert any(v is not None for values in value_columns for v in values), f"{query.dashboard} {query.where}: only nulls"


def test_current_state_panels_use_the_last_day() -> None:
    overridden = [q for q in QUERIES if q.time_from is not None]
    assert len(overridden) >= 10
    assert {q.time_from for q in overridden} == {"24h"}
    start, end = overridden[0].time_range(START, END)
    assert (end - start).total_seconds() == 86_400
